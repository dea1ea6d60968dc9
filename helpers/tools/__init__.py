"""The commands behind `make` and the terminal (`python -m helpers ...`); no notebook teaches them.

Tools sit on top: they may import any module of the workbook, and nothing imports them but
helpers/__main__.py and the console scripts (tests/test_layout.py checks it).
"""
