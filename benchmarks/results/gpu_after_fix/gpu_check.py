"""GPU checks of the new code against the old (HEAD) code: values, gradients, statistics; chunk peak memory."""
import sys, torch
import proxy_end2.losses as Ln, proxy_end2.uncertainty.ensemble as En  # new code: PYTHONPATH=.
sys.path.insert(0, "bench_before_tmp")
import old_pe2.losses as Lo, old_pe2.uncertainty.ensemble as Eo
assert "bench_before_tmp" not in Ln.__file__ and "old_pe2" in Lo.__file__, (Ln.__file__, Lo.__file__)
dev = torch.device("cuda")
g = torch.Generator(device=dev).manual_seed(0)
n, k, m = 512, 40000, 10
base = torch.randn(n, k, generator=g, device=dev) * 3
members = [base + 0.5 * torch.randn(n, k, generator=g, device=dev) for _ in range(m)]
with torch.no_grad():
    so, sn = Eo.EnsembleStatisticsAccumulator(), En.EnsembleStatisticsAccumulator()
    for x in members:
        so.add(x); sn.add(x)
    so, sn = so.finalize(), sn.finalize()
for name in ("log_mean_probs", "mean_log_probs", "expected_entropy"):
    d = (getattr(so, name) - getattr(sn, name)).abs().max().item()
    print(f"stats {name}: max abs diff old/new {d:.3g}  bitwise {torch.equal(getattr(so, name), getattr(sn, name))}")
print("mkl bitwise", torch.equal(so.mkl(), sn.mkl()), "eoe bitwise", torch.equal(so.entropy_of_expected(), sn.entropy_of_expected()))
for dtype in (torch.float32, torch.float16, torch.float64):
    z0 = (torch.randn(n, k, generator=g, device=dev) * 2).to(dtype)
    w = torch.randn(n, generator=g, device=dev, dtype=torch.float64)
    for fn in ("proxy_dirichlet_loss_from_stats", "dirichlet_nll_loss_from_stats"):
        out = []
        for L, st in ((Lo, so), (Ln, sn)):
            z = z0.clone().requires_grad_()
            v = getattr(L, fn)(z, st)
            (v * w).sum().backward()
            out.append((v.detach(), z.grad.double()))
        dv = ((out[0][0] - out[1][0]).abs() / out[0][0].abs()).max().item()
        dg = (out[0][1] - out[1][1]).abs().max().item() / out[0][1].abs().max().item()
        print(f"{fn[:14]} {dtype}: value rel {dv:.2e} grad rel-to-max {dg:.2e}")
# peak of one chunk (float64 temporaries), N*K = 2^24 elements exactly-ish
for fn in ("proxy_dirichlet_loss_from_stats", "dirichlet_nll_loss_from_stats"):
    for L, st, tag in ((Lo, so, "old"), (Ln, sn, "new")):
        rows = (1 << 24) // k
        z = (torch.randn(rows, k, generator=g, device=dev) * 2).requires_grad_()
        sub = type(st)(st.log_mean_probs[:rows].clone(), st.mean_log_probs[:rows].clone(), st.expected_entropy[:rows].clone(), m)
        sub.mkl()
        torch.cuda.synchronize(); torch.cuda.empty_cache(); base_mem = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        v = getattr(L, fn)(z, sub); torch.cuda.synchronize(); peak_f = torch.cuda.max_memory_allocated() - base_mem
        torch.cuda.reset_peak_memory_stats(); v.sum().backward(); torch.cuda.synchronize(); peak_b = torch.cuda.max_memory_allocated() - base_mem
        chunk64 = rows * k * 8
        print(f"{tag} {fn[:14]} one chunk ({rows}x{k}): fwd peak {peak_f/chunk64:.2f}, bwd peak {peak_b/chunk64:.2f} chunk-sized float64 tensors")
        del v, z, sub
