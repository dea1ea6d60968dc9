"""Plumbing that no lesson teaches: downloading, unzipping, writing files atomically, reading one image file, progress bars.

The lesson modules of :mod:`helpers` build on these, and a learner may skip them: downloads that
resume and check their digests (:mod:`.download`), archives unpacked without escaping their folder
(:mod:`.archive`), every file written through one atomic writer and content digests that are
reused (:mod:`.files`), one image file read with the data set's rules (:mod:`.images`), and the
progress bars (:mod:`.progress`). Plumbing imports nothing of the workbook but
``helpers.settings`` and itself (``tests/test_layout.py`` checks it).
"""
