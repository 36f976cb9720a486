"""Sphinx configuration of the topogrow documentation (``make docs``).

Why Sphinx with sphinx-gallery: the PyTorch-ecosystem libraries readers compare topogrow with
(PyTorch itself, BackPACK, curvlinops, GroMo) document themselves that way, so the API
reference and the executed tutorials look like what they already know. furo is a plain,
readable theme; MyST lets the pages be Markdown with ``$...$`` math.

Offline: nothing here fetches anything while building, and the site needs no network to read:
MathJax, which renders the formulas in the reader's browser, is copied into ``_static/mathjax``
by sphinx-mathjax-offline (a PyPI package that bundles it; its import name has hyphens).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the working tree's code, even without an install
sys.path.insert(0, str(ROOT / "docs"))  # gallery_hooks

import topogrow  # noqa: E402

project = "topogrow"
author = "the topogrow developers"
copyright = "2025, the topogrow developers"  # noqa: A001 (Sphinx's name)
release = topogrow.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # the docstrings' Google style (Args:, Returns:, Attributes:)
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from _static, not from a CDN
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip"]
templates_path = ["_templates"]

# MyST: $...$ and $$...$$ math, ::: fences, anchors for headings down to ###
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# API reference: one page per public name, from the docstrings
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "show-inheritance": True,
    # scikit-learn adds these metadata-routing methods to every estimator; their docstrings
    # point into scikit-learn's own documentation
    "exclude-members": "set_fit_request, set_score_request, set_predict_request, set_predict_proba_request",
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = True  # topogrow.sklearn follows scikit-learn (Parameters ----------)
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: dataclass fields are documented once, by autodoc


# The gallery: examples/plot_*.py are executed at build time and their figures embedded; the
# other scripts in examples/ (quickstart, ddp_grow, transfer_where_how) are run by the tests.
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"^(?!plot_)",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib", "gallery_hooks.one_thread"),
    "matplotlib_animations": False,
    "show_memory": False,
}

# Links: the build checks internal references (-W fails on a broken one); `make docs` also runs
# the linkcheck builder, with every external URL ignored so that it needs no network.
linkcheck_ignore = [r"https?://.*"]
linkcheck_report_timeouts_as_broken = False

html_theme = "furo"
html_title = f"topogrow {release}"
html_static_path: list[str] = []
