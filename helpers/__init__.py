"""Helpers for the concrete crack workbook."""
