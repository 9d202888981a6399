"""benchmarks/compare.py's CPU naming and measured matmul ceiling (no PyTorch needed)."""
import math

from benchmarks import compare


def test_cpu_model_is_the_cpuinfo_model_name():
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.lower().startswith("model name")]
  except OSError:
    names = []
  assert compare.cpu_model() == (names[0] if names else None)


def test_gemm_peak_reports_the_best_measured_rate():
  out = compare.gemm_peak(n=64, reps=3, torch_threads=None)
  assert set(out) == {"gemm64_gflops_jax", "gemm_peak_gflops"}
  assert math.isfinite(out["gemm64_gflops_jax"]) and out["gemm64_gflops_jax"] > 0
  assert out["gemm_peak_gflops"] == max(v for k, v in out.items() if k != "gemm_peak_gflops")
