"""SamWidget in Notebook 7 (issue 13, item 1): its shortcuts are listened for in the capture
phase, so `z` with the widget focused used to restore a deleted cell instead of undoing the
point. One Notebook 7 server for this module; the checks are the JupyterLab ones."""

from __future__ import annotations

import pytest
from harness import JupyterLabServer, Lab
from test_hosts import check_keys_stay_in_the_widget

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def notebook7_server():
    server = JupyterLabServer(app="notebook")
    server.start()
    yield server
    server.cleanup()


def test_keys_stay_in_the_widget_in_notebook7(notebook7_server, chromium):
    with Lab(notebook7_server, browser=chromium) as lab:
        nb = lab.new_notebook()
        assert "/notebooks/" in nb.page.url  # Notebook 7's own page, not JupyterLab
        check_keys_stay_in_the_widget(nb)
