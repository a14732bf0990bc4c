"""Sphinx configuration of RasPy's docs: Markdown pages (MyST), the API from docstrings, pictures by Graphviz.

Built by ``make docs`` into ``docs/_build/html``, every warning an error.
Nothing is fetched from the internet, at build time or when a page is read.
"""
import os
import shutil
import sys
from pathlib import Path

from sphinx.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # raspy from this checkout, for autodoc

project = "RasPy"
author = "RasPy"
copyright = "RasPy"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.graphviz",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# -- MyST --------------------------------------------------------------------
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve and are checked

# -- autodoc -----------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"

# With -n every reference must resolve; these name things outside RasPy's documented API.
nitpick_ignore_regex = [
    ("py:class", r"(zmq|pathlib|typing|collections\.abc|threading)\..*"),
    ("py:class", r"(Path|Any|Callable|Iterable|Mapping|Protocol|TypeVar|ClassVar)"),
    ("py:class", r"raspy\.(mdp\.protocol\.Frames|mdp\.worker\.(Handler|BatchHandler)|devices\.register\.D"
                 r"|state\.titanic\.client\.Callback|state\.kv\.message\.Callback)"),
    ("py:class", r"(Frames|Handler|BatchHandler|Callback|D)"),
    ("py:class", r"dict\[str"),  # a dataclass field's dict[str, Any], as autodoc splits it
    # Docstring references that name a class or attribute by its short name from another module
    # (or from a private base class): they read well in the source, and the page documents them.
    ("py:class", r"DeviceService"),
    ("py:attr", r"stop_check"),
]

# -- Graphviz: the pictures are drawn from text at build time -------------------
graphviz_dot = os.environ.get("GRAPHVIZ_DOT", "dot")
graphviz_output_format = "svg"
if shutil.which(graphviz_dot) is None:
    raise ConfigError(
        f"Graphviz's {graphviz_dot!r} command is not installed: the architecture picture cannot be drawn. "
        "Install it with 'apt-get install graphviz' ('make docs' does so when run as root), "
        "or point GRAPHVIZ_DOT at it.")

# -- HTML --------------------------------------------------------------------
html_theme = "alabaster"
html_title = "RasPy"
# lines of up to 100 characters, as in examples/, fit without a scroll bar
html_theme_options = {"page_width": "1240px", "body_max_width": "none", "code_font_size": "0.8em"}
html_static_path = []
html_show_sourcelink = False
html_show_sphinx = False
