"""JupyterLab's file browser lists each lesson once.

Every notebook ships as a pair: ``NN_topic.ipynb`` (what a learner opens) and its jupytext source
``NN_topic.py`` beside it (what editors, diffs and ``make notebooks`` use). The pair stays side by
side on disk; only the lab's *directory listing* drops a ``.py`` whose ``.ipynb`` twin is in the same
folder. The file itself stays reachable (open it by path, from a terminal or an editor), and jupytext
still syncs the pair on save. ``make lab`` turns this on for the project's venv
(``tools/setup_env.py`` writes ``ServerApp.contents_manager_class``); jupytext's server extension
then derives its own manager from this one.
"""
from __future__ import annotations

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

__all__ = ["LessonListingManager", "lessons_once"]


def lessons_once(entries: list[dict]) -> list[dict]:
    """Drop ``stem.py`` entries whose ``stem.ipynb`` is in the same listing; keep everything else in order.

    entries: Jupyter contents models of one directory (each has ``name`` and ``type``).
    """
    notebooks = {e["name"][: -len(".ipynb")] for e in entries if e["name"].endswith(".ipynb")}
    return [e for e in entries
            if not (e.get("type") != "directory" and e["name"].endswith(".py") and e["name"][:-3] in notebooks)]


class LessonListingManager(AsyncLargeFileManager):
    """The default contents manager, except that a folder's listing shows each paired lesson once."""

    async def get(self, path, content=True, type=None, format=None, **kwargs):
        model = await super().get(path, content=content, type=type, format=format, **kwargs)
        if model.get("type") == "directory" and isinstance(model.get("content"), list):
            model["content"] = lessons_once(model["content"])
        return model
