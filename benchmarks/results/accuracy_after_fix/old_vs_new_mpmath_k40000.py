# Old (c6fa3de) vs new package on the same inputs. Needs /tmp/old/old_pe2: the package of c6fa3de with an
# empty __init__.py (git archive c6fa3de proxy_end2 | tar x -C /tmp/old && mv /tmp/old/proxy_end2 /tmp/old/old_pe2
# && echo > /tmp/old/old_pe2/__init__.py). Run from the repository root with .venv/bin/python.
import sys, torch, mpmath; torch.set_num_threads(1)
sys.path.insert(0, "/tmp/old")
import old_pe2.losses as Lo
import proxy_end2.losses as Ln
from proxy_end2.uncertainty import ensemble_statistics
mpmath.mp.dps = 40
k = 40000
g = torch.Generator().manual_seed(3)
teach = torch.randn(1, 4, k, generator=g, dtype=torch.float64) * 3
st = ensemble_statistics(teach)
pbar = st.mean_probs()[0]
def mp_value(z, b, c):
    a = [mpmath.exp(mpmath.mpf(v)) + c for v in z.tolist()]
    a0 = mpmath.fsum(a); dig0 = mpmath.digamma(a0)
    lb = mpmath.fsum(mpmath.loggamma(x) for x in a) - mpmath.loggamma(a0)
    ent = lb - mpmath.fsum((x - 1) * (mpmath.digamma(x) - dig0) for x in a)
    e = -mpmath.fsum(mpmath.mpf(p) * (mpmath.digamma(x) - dig0) for p, x in zip(pbar.tolist(), a))
    return e - ent / b
for name, z, b, c in (("moderate", torch.randn(k, generator=g, dtype=torch.float64) * 2, 30.0, 1.0),
                      ("near opt B=1e11", torch.log(1e11 * pbar), 1e11, 1.0),
                      ("large logits", 40 + 3 * torch.randn(k, generator=g, dtype=torch.float64), 30.0, 1.0),
                      ("c=0 tiny", torch.randn(k, generator=g, dtype=torch.float64) * 2 - 5, 30.0, 0.0)):
    prec = torch.tensor([b], dtype=torch.float64)
    vo = Lo._proxy_loss_given_precision(z[None], st.log_mean_probs, prec, c).item()
    vn = Ln._proxy_loss_given_precision(z[None], st.log_mean_probs, prec, c).item()
    want = mp_value(z, b, c)
    a0 = float(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) + c for v in z.tolist()))
    import math
    bound = 1e-16 * k * math.log(a0) / b + 1e-16 * math.log(a0)
    print(f"{name:16s} value {float(want):.6g}  old err {abs(vo - float(want)):.2e}  new err {abs(vn - float(want)):.2e}  documented bound {bound:.2e}")
