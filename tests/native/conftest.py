"""The compiled kernels, built once for the tests of this folder."""

import os

import pytest

from gentext import native


@pytest.fixture(scope="package")
def kernels(tmp_path_factory, trained_run):
    """The module, built into a cache of its own (the suite runs with GENTEXT_NATIVE=off):
    GENTEXT_TEST_NATIVE_CACHE where set (CI's second, AVX2-capped run loads what its first built: the
    build's flags do not depend on the CPU), else a temporary folder. The session's `trained_run`
    is made first, so its token cache lands in the suite's cache, where the tests after these look
    for it, not in this folder's."""
    if native._missing_tools():
        pytest.skip(f"no {native._missing_tools()} here: the Python path is what runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("GENTEXT_CACHE", os.environ.get("GENTEXT_TEST_NATIVE_CACHE") or str(tmp_path_factory.mktemp("native")))
    mp.setenv("GENTEXT_NATIVE", "wait")
    native.prepare()
    module = native.kernels()
    assert module is not None, native.status()
    module.built = next(native.entry().glob("*.so"))
    yield module
    native.use(None)
    mp.undo()
