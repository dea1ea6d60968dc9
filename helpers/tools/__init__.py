"""The commands behind ``make`` and the terminal: ``python -m helpers run|test|lab|bench|strip|train|...``.

Nothing here is taught in a notebook. :mod:`.cli` is the one command line (``make`` calls it, and
so can a learner without ``make``); :mod:`.run_notebooks` executes the notebooks headless and
prints the summary; :mod:`.notebook_files` strips them; :mod:`.lint` holds the checks ``test``
runs first; :mod:`.train` trains the capstone's model from a terminal. Tools sit on top:
they may import any module of the workbook, and nothing imports them but ``helpers/__main__.py``
and the console scripts (``tests/test_layout.py`` checks it).
"""
