"""Plumbing that no lesson teaches: downloading, unzipping, writing files atomically, reading one image file, progress bars.

The lesson modules of :mod:`helpers` build on these, and a learner may skip them: a download that is
never used half-done and a zip unpacked without escaping its folder (:mod:`.download`), files and
folders written so that nothing is half-written, under a lock (:mod:`.files`), one image file read
with the data set's rules (:mod:`.images`), and the progress bars (:mod:`.progress`). Plumbing
imports nothing of the workbook but ``helpers.settings`` and itself (``tests/test_layout.py``).
"""
