"""The attention kernel compiles for an H100 (sm_90) with Triton's bundled ptxas -- no GPU needed.

The interpreter runs the kernel's logic; this checks the code also lowers through the real GPU
compiler (layouts, dot shapes, loops) in the configurations the autotuner uses, and does not spill.
Runs in a subprocess because TRITON_INTERPRET=1 (set for the other tests) turns kernels into
interpreted functions.
"""
import os
import subprocess
import sys
import textwrap

import pytest

triton = pytest.importorskip("triton", reason="triton is not installed (pip install 'vidrt[triton]')")

_PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")

SCRIPT = textwrap.dedent('''
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from vidrt.kernels import spacetime_attention as sa

    fn = sa._attn_fwd
    ptrs = {"Q": "bf16", "K": "bf16", "V": "bf16", "Out": "bf16", "KV_LENS": "i32", "Q_LENS": "i32",
            "RQ": "fp32", "RK": "fp32"}
    base = dict(HEAD_DIM=128, D_PAD=128, D2T=22, D2H=21, MASK=0, ROPE_Q=True, ROPE_K=True, HAS_KV_LENS=True,
                HAS_Q_LENS=False, HAS_PAD=False, TILE_T=1, TILE_H=1, TILE_W=1, DOT_F32=False, PREC=None,
                BLOCK_M=128, BLOCK_N=64)
    for variant in (dict(), dict(MASK=1), dict(MASK=2, TILE_T=2, TILE_H=8, TILE_W=8, HAS_PAD=True)):
        const = {**base, **variant}
        sig = {n: "constexpr" if n in const else ("*" + ptrs[n]) if n in ptrs else "fp32" if n == "qk_scale" else "i32"
               for n in fn.arg_names}
        consts = {(fn.arg_names.index(n),): v for n, v in const.items()}
        k = triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32),
                           options=dict(num_warps=8, num_stages=2))
        assert b"wgmma" in k.asm["ptx"].encode() or "mma" in k.asm["ptx"], "no tensor-core MMA in the PTX"
        print("compiled", variant, "shared", k.metadata.shared)
''')


@pytest.mark.skipif(not os.path.exists(_PTXAS), reason="triton's bundled ptxas is not present")
def test_attention_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("compiled") == 3
