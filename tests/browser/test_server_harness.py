"""The browser harness itself: JupyterLab starts, cells run, a widget's click reaches Python."""

from __future__ import annotations

import pytest
from harness import CLICKER, CellError

pytestmark = pytest.mark.browser


def test_cell_output_and_python_state(lab):
    nb = lab.new_notebook()
    assert nb.run_cell("print('hello'); 6 * 7").text == "hello\n42\n"
    nb.run_cell("x = [1, 2, 3]")
    assert nb.value("x") == [1, 2, 3]
    assert nb.execute("print(sum(x))") == "6\n"
    with pytest.raises(CellError, match="ZeroDivisionError"):
        nb.run_cell("1 / 0")


def test_kernel_imports_the_checkout(lab):
    nb = lab.new_notebook()
    path = nb.value("__import__('sam_widget').__file__")
    from pathlib import Path

    assert Path(path).resolve().parent == Path(__file__).resolve().parents[2] / "sam_widget"


def test_anywidget_click_reaches_python(lab):
    nb = lab.new_notebook()
    cell = nb.run_cell(CLICKER)
    button = cell.output.locator("button.harness-clicker")
    button.click()
    button.click()
    button.page.wait_for_function(
        "() => document.querySelector('button.harness-clicker').textContent === 'clicks: 2'"
    )
    # the button shows its own state at once; the kernel hears of it a moment later
    assert nb.wait_until("w.clicks == 2") is True
    # Python -> browser
    nb.execute("w.clicks = 10")
    button.page.locator("button.harness-clicker", has_text="clicks: 10").wait_for()


def test_two_notebooks_and_reload(lab):
    first = lab.new_notebook()
    second = lab.new_notebook()
    first.run_cell(CLICKER)
    second.run_cell(CLICKER.replace("w = Clicker()", "w = Clicker(clicks=100)"))
    first_button = first.cell_locator(-1).locator("button.harness-clicker")
    second_button = second.cell_locator(-1).locator("button.harness-clicker")
    second_button.click()
    second.page.locator("button.harness-clicker", has_text="clicks: 101").wait_for()
    assert second.wait_until("w.clicks == 101") is True
    assert first.value("w.clicks") == 0  # separate kernels
    first_button.click()
    first.page.locator("button.harness-clicker", has_text="clicks: 1").wait_for()
    # A second view of the same notebook shares its kernel and widget state.
    first.save()
    again = lab.open_notebook(first.path)
    again_button = again.cell_locator(0).locator("button.harness-clicker")
    again_button.click()
    again.page.locator("button.harness-clicker", has_text="clicks: 2").wait_for()
    assert first.wait_until("w.clicks == 2") is True
    # Reloading the page reconnects to the same kernel.
    first.reload()
    assert first.value("w.clicks") == 2
    first.cell_locator(0).locator("button.harness-clicker", has_text="clicks: 2").wait_for()
    # Reloading with unsaved changes (JupyterLab asks before leaving) keeps the kernel too.
    second.run_cell("y = 5")
    second.reload()
    assert second.value("(w.clicks, y)") == [101, 5]
    assert not [line for line in lab.console if line.startswith("dialog:")]
    assert first.wait_until("w.clicks == 2") is True
