"""Progress bars: widgets in JupyterLab, plain text where the notebooks run headless (`make run`).

tqdm's automatic choice draws a widget inside a Jupyter kernel. A widget's state is not saved in
an executed notebook, so the copies `make run` keeps under build/executed/ would show bars frozen
at "0%". The kernels that `make run` starts set WORKBOOK_PLAIN_PROGRESS=1, so there the bars are
plain text, which the executed copies keep as they ended and the terminal can show as they run.
"""

from __future__ import annotations

from tqdm.auto import tqdm as widget_or_text_tqdm
from tqdm.std import tqdm as text_tqdm

from helpers.settings import SettingsError, plain_progress


def _plain() -> bool:
    """WORKBOOK_PLAIN_PROGRESS, read when the kernel starts; a bad value means text here (importing never
    fails), and every command stops on it in its first line (helpers.settings.validate_settings)."""
    try:
        return plain_progress()
    except SettingsError:
        return True


tqdm = text_tqdm if _plain() else widget_or_text_tqdm  # decided once, when the kernel starts
