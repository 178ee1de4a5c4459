# Old (c6fa3de) vs new package on the same inputs. Needs /tmp/old/old_pe2: the package of c6fa3de with an
# empty __init__.py (git archive c6fa3de proxy_end2 | tar x -C /tmp/old && mv /tmp/old/proxy_end2 /tmp/old/old_pe2
# && echo > /tmp/old/old_pe2/__init__.py). Run from the repository root with .venv/bin/python.
import sys, importlib, torch, math; torch.set_num_threads(1)
def load(root):
    for m in list(sys.modules):
        if m.startswith("proxy_end2"): del sys.modules[m]
    sys.path.insert(0, root)
    import proxy_end2.losses as L, proxy_end2.uncertainty.ensemble as E
    sys.path.pop(0)
    return L, E
sys.path.insert(0, "/tmp/old")
import old_pe2.losses as Lo, old_pe2.uncertainty.ensemble as Eo
import proxy_end2.losses as Ln, proxy_end2.uncertainty.ensemble as En
assert Lo.__file__.startswith("/tmp/old") and Ln.__file__.startswith("/work/main"), (Lo.__file__, Ln.__file__)
g = torch.Generator().manual_seed(0)
def case(n, k, m, zscale, zshift, dtype, c, name, extreme=False):
    teach = torch.randn(n, m, k, generator=g, dtype=torch.float64)*3
    z = (torch.randn(n, k, generator=g, dtype=torch.float64)*zscale + zshift)
    if extreme:
        z[0, 0] = 800.; z[0, 1] = -500.; z[1 % n, 2] = float("inf")
    z = z.to(dtype)
    res = {}
    for tag, L, E in (("old", Lo, Eo), ("new", Ln, En)):
        for lossname in ("proxy_dirichlet_loss_from_stats", "dirichlet_nll_loss_from_stats"):
            st = E.ensemble_statistics(teach.to(torch.float32 if dtype != torch.float64 else dtype))
            zz = z.clone().requires_grad_()
            v = getattr(L, lossname)(zz, st, model_offset=c)
            w = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            (v*w).sum().backward()
            res[(tag, lossname)] = (v.detach(), zz.grad)
    for lossname in ("proxy_dirichlet_loss_from_stats", "dirichlet_nll_loss_from_stats"):
        vo, go = res[("old", lossname)]; vn, gn = res[("new", lossname)]
        dv = ((vo - vn).abs() / vo.abs().clamp(min=1e-300)).max().item()
        gscale = go.double().abs().max().item()
        dg = ((go.double() - gn.double()).abs().max().item() / gscale) if gscale > 0 else 0
        same_nan = torch.equal(torch.isnan(vo), torch.isnan(vn)) and torch.equal(torch.isnan(go), torch.isnan(gn))
        print(f"{name:28s} {lossname[:14]:14s} c={c} {str(dtype)[6:]:8s} value rel {dv:.2e}  grad rel(max) {dg:.2e} nan-pattern-same {same_nan} gdtype {gn.dtype}")
for c in (1.0, 0.5, 0.0):
    case(7, 50, 3, 2.0, 0.0, torch.float64, c, "moderate f64")
    case(7, 50, 3, 3.0, 5.0, torch.float64, c, "large logits f64")
    case(7, 50, 3, 2.0, 0.0, torch.float32, c, "moderate f32")
    case(7, 50, 3, 2.0, 0.0, torch.float16, c, "moderate f16")
    case(7, 50, 3, 2.0, 0.0, torch.bfloat16, c, "moderate bf16")
    case(7, 50, 3, 2.0, 30.0, torch.float64, c, "huge logits f64")
    case(4, 50, 3, 2.0, 0.0, torch.float64, c, "extreme/clamped f64", extreme=True)
case(5, 4000, 4, 2.0, -3.0, torch.float32, 1.0, "K=4000 f32")
