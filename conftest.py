"""Runs the suite on every core when pytest-xdist is installed (``-n auto``),
and serially under ``-p no:xdist`` or without it; ``-n N`` still wins."""

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
  if (
      config.pluginmanager.hasplugin("xdist")
      and not hasattr(config, "workerinput")
      and config.getoption("numprocesses", None) is None
      and not config.getoption("usepdb", False)
  ):
    config.option.numprocesses = "auto"
