"""The model cache key hashes the training code and what it imports, and the export directory
the export code: each digest must cover every quant_models module that path really loads."""
import subprocess
import sys

import pytest

from quant_models.cache import package_imports


@pytest.mark.parametrize("roots", [("training", "cache"), ("export",)])
def test_digests_cover_every_module_the_path_loads(roots):
    code = ("import sys\n" + "".join(f"import quant_models.{r}\n" for r in roots) +
            "print(' '.join(sorted(m.split('.')[1] for m in sys.modules if m.startswith('quant_models.'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    hashed = set().union(*(package_imports(r) for r in roots))
    assert loaded <= hashed, f"loaded but not hashed: {sorted(loaded - hashed)}"


def test_code_generation_does_not_retrain_models():
    trained_from = package_imports("training") | package_imports("cache")
    assert not {"codegen", "dsp_layout", "export", "exact_onnx", "golden", "pipeline"} & trained_from
