using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Support;

public static partial class OpCases
{
    static List<OpCase> BuildAll()
    {
        var l = new List<OpCase>();
        void Ag(string name, Action<CaseRun> body, double tol = 1, bool bf16 = true, bool gradcheck = true) => l.Add(new OpCase(name, body, true, tol, bf16, gradcheck));
        void Raw(string name, Action<CaseRun> body, double tol = 1, bool bf16 = true) => l.Add(new OpCase(name, body, false, tol, bf16));

        // ---------------- autograd ops (forward + backward through F) ----------------
        Ag("linear", r => r.Output("y", F.Linear(r.Input("x", [3, 17]), r.Input("w", [5, 17]), r.Input("b", [5]))));
        Ag("linear_nobias_3d", r => r.Output("y", F.Linear(r.Input("x", [2, 3, 4]), r.Input("w", [1, 4]))));
        Ag("linear_row1", r => r.Output("y", F.Linear(r.Input("x", [1, 3]), r.Input("w", [17, 3]), r.Input("b", [17]))));
        foreach (var (ta, tb) in new[] { (false, false), (true, false), (false, true), (true, true) })
        {
            Ag($"matmul_batched_t{(ta ? 1 : 0)}{(tb ? 1 : 0)}", r =>
            {
                var a = r.Input("a", ta ? [2, 4, 3] : [2, 3, 4]);
                var b = r.Input("b", tb ? [2, 5, 4] : [2, 4, 5]);
                r.Output("y", F.MatMul(a, b, ta, tb));
            });
            Ag($"matmul_shared_b_t{(ta ? 1 : 0)}{(tb ? 1 : 0)}", r =>
            {
                var a = r.Input("a", ta ? [3, 1, 4, 3] : [3, 1, 3, 4]);
                var b = r.Input("b", tb ? [5, 4] : [4, 5]);
                r.Output("y", F.MatMul(a, b, ta, tb));
            });
        }
        Ag("matmul_2d", r => r.Output("y", F.MatMul(r.Input("a", [1, 17]), r.Input("b", [17, 3]))));
        Ag("add", r => r.Output("y", F.Add(r.Input("a", [3, 17]), r.Input("b", [3, 17]))));
        Ag("add_same_input", r => { var a = r.Input("a", [17]); r.Output("y", F.Add(a, a)); });
        Ag("sub", r => r.Output("y", F.Sub(r.Input("a", [4, 3]), r.Input("b", [4, 3]))));
        Ag("mul", r => r.Output("y", F.Mul(r.Input("a", [3, 17]), r.Input("b", [3, 17]))));
        Ag("mul_square", r => { var a = r.Input("a", [1, 3]); r.Output("y", F.Mul(a, a)); });
        Ag("scale", r => r.Output("y", F.Scale(r.Input("x", [17]), -0.375f)));
        Ag("add_bias", r => r.Output("y", F.AddBias(r.Input("x", [2, 3, 17]), r.Input("b", [17]))));
        Ag("add_broadcast", r => r.Output("y", F.AddBroadcast(r.Input("x", [2, 3, 4, 5]), r.Input("b", [4, 5]))));
        Ag("add_broadcast_full", r => r.Output("y", F.AddBroadcast(r.Input("x", [3, 1]), r.Input("b", [3, 1]))));
        Ag("mul_scalar", r => r.Output("y", F.MulScalar(r.Input("x", [3, 17]), r.Input("s", [1]))));
        Ag("detach_stops_gradient", r =>
        {
            var x = r.Input("x", [2, 5]);
            r.Output("y", F.Mul(x, F.Detach(F.Scale(x, 3f))));
        }, gradcheck: false); // finite differences see the detached path too
        Ag("bias_gelu", r => r.Output("y", F.BiasGelu(r.Input("x", [3, 17], -4, 4), r.Input("b", [17]))));
        Ag("gelu", r => r.Output("y", F.Gelu(r.Input("x", [1, 3, 5], -6, 6))));
        Ag("layernorm", r => r.Output("y", F.LayerNorm(r.Input("x", [3, 17], -2, 3), r.Input("g", [17], 0.5, 1.5), r.Input("b", [17]))), tol: 2);
        Ag("layernorm_width1", r => r.Output("y", F.LayerNorm(r.Input("x", [3, 1]), r.Input("g", [1]), r.Input("b", [1]), 1e-3f)));
        Ag("layernorm_residual", r =>
        {
            var (s, y) = F.LayerNormResidual(r.Input("x", [2, 3, 17]), r.Input("res", [2, 3, 17]), r.Input("g", [17], 0.5, 1.5), r.Input("b", [17]));
            r.Output("sum", s); r.Output("y", y);
        }, tol: 2);
        Ag("layernorm_residual_y_only", r =>
        {
            var (_, y) = F.LayerNormResidual(r.Input("x", [4, 3]), r.Input("res", [4, 3]), r.Input("g", [3], 0.5, 1.5), r.Input("b", [3]));
            r.Output("y", y);
        }, tol: 2);
        Ag("softmax", r => r.Output("y", F.Softmax(r.Input("x", [4, 17], -3, 3), 0.5f)));
        Ag("softmax_width1", r => r.Output("y", F.Softmax(r.Input("x", [3, 1]), 2f)));
        Ag("l2normalize", r => r.Output("y", F.L2Normalize(r.Input("x", [3, 17]))));
        Ag("cross_entropy", r => r.Output("loss", F.CrossEntropy(r.Input("logits", [6, 7], -3, 3), r.Ids("t", [6], 7, ignoreEvery: 3))));
        Ag("cross_entropy_i64_3d", r => r.Output("loss", F.CrossEntropy(r.Input("logits", [2, 3, 17], -3, 3), r.Ids("t", [2, 3], 17, DType.I64, ignoreEvery: 4, ignoreValue: 0 - 1), -1)));
        Ag("cross_entropy_all_ignored", r => r.Output("loss", F.CrossEntropy(r.Input("logits", [2, 3]), r.Ids("t", [2], 3, ignoreEvery: 1))));
        Ag("embedding_repeated", r =>
        {
            var ids = r.Backend.FromInts([1, 4, 1, 1, 0, 5, 4, 1], [2, 4]);
            r.Keep("ids", ids);
            r.Output("y", F.Embedding(r.Input("w", [6, 5]), ids));
        });
        Ag("dropout", r => r.Output("y", F.Dropout(r.Input("x", [17, 9]), 0.3f, seed: 1234567890123UL, offset: 77)));
        Ag("sum", r => r.Output("y", F.Sum(r.Input("x", [3, 17]))));
        Ag("mean", r => r.Output("y", F.Mean(r.Input("x", [17, 3]))));
        Ag("sum_last_dim", r => r.Output("y", F.SumLastDim(r.Input("x", [2, 3, 17]))));
        Ag("reshape", r => r.Output("y", F.Reshape(F.Scale(r.Input("x", [3, 4]), 2f), 2, -1, 3)));
        Ag("permute_0213", r => r.Output("y", F.Permute(r.Input("x", [2, 3, 4, 5]), 0, 2, 1, 3)));
        Ag("permute_3102", r => r.Output("y", F.Permute(r.Input("x", [2, 3, 1, 5]), 3, 1, 0, 2)));
        Ag("permute_rank6", r => r.Output("y", F.Permute(r.Input("x", [2, 1, 3, 2, 1, 2]), 5, 3, 0, 4, 2, 1)));
        Ag("transpose", r => r.Output("y", F.Transpose(r.Input("x", [3, 17]), 0, 1)));
        Ag("slice", r => r.Output("y", F.Slice(r.Input("x", [3, 17, 2]), 1, 5, 7)));
        Ag("slice_twice_overlap", r =>
        {
            var x = r.Input("x", [4, 6]);
            r.Output("a", F.Slice(x, 1, 0, 4)); r.Output("b", F.Slice(x, 1, 2, 4));
        });
        Ag("concat", r => r.Output("y", F.Concat([r.Input("a", [2, 3, 4]), r.Input("b", [2, 1, 4]), r.Input("c", [2, 5, 4])], 1)));
        Ag("concat_last", r => r.Output("y", F.Concat([r.Input("a", [3, 1]), r.Input("b", [3, 17])], -1)));
        Ag("cast_roundtrip", r => r.Output("y", F.Cast(F.Mul(F.Cast(r.Input("x", [3, 17]), DType.BF16), F.Cast(r.Input("z", [3, 17]), DType.BF16)), r.DType)), gradcheck: false);
        Ag("mini_block", r =>
        {
            // A tiny pre-LN transformer-ish chain: ops composed the way the models use them.
            var x = r.Input("x", [2, 3, 8]);
            var h = F.LayerNorm(x, r.Input("g1", [8], 0.5, 1.5), r.Input("b1", [8]));
            var q = F.Linear(h, r.Input("wq", [8, 8]), r.Input("bq", [8]));
            var att = F.Softmax(F.MatMul(q, h, transB: true), 0.35f);
            var o = F.MatMul(att, h);
            var m = F.Linear(F.BiasGelu(F.Linear(o, r.Input("w1", [16, 8])), r.Input("bm", [16])), r.Input("w2", [8, 16]));
            var (s, y) = F.LayerNormResidual(m, x, r.Input("g2", [8], 0.5, 1.5), r.Input("b2", [8]));
            r.Output("y", F.L2Normalize(F.Add(y, s)));
        }, tol: 4);

        // ---------------- raw IBackend ops (semantics the autograd path does not reach) ----------------
        Raw("gemm_alpha_beta_bias_batched", r =>
        {
            var be = r.Backend;
            foreach (var (ta, tb) in new[] { (false, false), (true, false), (false, true), (true, true) })
            {
                var a = r.Input($"a{ta}{tb}", [2, 3 * 17]); var b = r.Input($"b{ta}{tb}", [2, 17 * 5]);
                var c = r.Input($"c{ta}{tb}", [2, 3 * 5]); var bias = r.Input($"bias{ta}{tb}", [5], dtype: r.StatType);
                be.Gemm(new GemmArgs(a, b, c, 3, 5, 17, ta, tb, Alpha: 0.75f, Beta: -0.5f, Bias: bias, Batch: 2, StrideA: 3 * 17, StrideB: 17 * 5, StrideC: 3 * 5));
                r.Output($"c_t{(ta ? 1 : 0)}{(tb ? 1 : 0)}", c);
            }
        });
        Raw("gemm_broadcast_a_k1", r =>
        {
            var a = r.Input("a", [4, 1]); var b = r.Input("b", [3, 1, 6]);
            var c = r.Keep("c", r.Backend.Zeros([3, 4, 6], r.DType));
            r.Backend.Gemm(new GemmArgs(a, b, c, 4, 6, 1, Batch: 3, StrideA: 0, StrideB: 6, StrideC: 24));
            r.Output("c", c);
        });
        Raw("axpy", r => { var y = r.Input("y", [3, 17]); r.Backend.Axpy(-1.5f, r.Input("x", [3, 17]), y); r.Output("y", y); });
        Raw("fill_cast", r =>
        {
            var t = r.Keep("t", r.Backend.Empty([2, 3], r.DType)); r.Backend.Fill(t, 0.3125); r.Output("fill", t);
            var f = r.Keep("f", r.Backend.Empty([3, 17], DType.F32)); r.Backend.Cast(r.Input("x", [3, 17]), f); r.Output("to_f32", f);
            var h = r.Keep("h", r.Backend.Empty([3, 17], DType.BF16)); r.Backend.Cast(r.Input("x", [3, 17]), h); r.Output("to_bf16", h);
        });
        Raw("permute_accumulate", r =>
        {
            var y = r.Input("y", [4, 3, 2]);
            r.Backend.Permute(r.Input("x", [2, 3, 4]), [2, 1, 0], y, accumulate: true);
            r.Output("y", y);
        });
        Raw("copyslice_accumulate", r =>
        {
            var y = r.Input("y", [2, 9, 3]);
            r.Backend.CopySlice(r.Input("x", [2, 5, 3]), 1, 1, y, 4, 3, accumulate: true);
            r.Output("y", y);
            var z = r.Input("z", [2, 9, 3]);
            r.Backend.CopySlice(r.Input("x", [2, 5, 3]), 1, 0, z, 2, 5, accumulate: false);
            r.Output("z", z);
        });
        Raw("sum_reductions", r =>
        {
            var be = r.Backend; var x = r.Input("x", [5, 17]);
            var s = r.Keep("s", be.Empty([1], r.StatType)); be.SumAll(x, s); r.Output("sum_all", s);
            var rows = r.Input("rows", [17]); be.SumRows(x, rows, accumulate: true); r.Output("sum_rows_acc", rows);
            var rows2 = r.Keep("rows2", be.Empty([17], r.DType)); be.SumRows(x, rows2, accumulate: false); r.Output("sum_rows", rows2);
            var last = r.Keep("last", be.Empty([5], r.DType)); be.SumLastDim(x, last); r.Output("sum_last", last);
            var ss = r.Keep("ss", be.Empty([1], r.StatType)); be.SumOfSquares([x, r.Input("x2", [3])], ss); r.Output("sum_sq", ss);
        });
        Raw("cross_entropy_rows", r =>
        {
            var be = r.Backend; var logits = r.Input("logits", [5, 17], -4, 4); var t = r.Ids("t", [5], 17, ignoreEvery: 2, ignoreValue: 3);
            var loss = r.Keep("loss", be.Empty([5], r.StatType)); var lse = r.Keep("lse", be.Empty([5], r.StatType));
            be.CrossEntropy(logits, t, 3, loss, lse);
            r.Output("loss", loss); r.Output("lse", lse);
            var dlogits = r.Input("dlogits", [5, 17]);
            be.CrossEntropyBackward(logits, t, 3, lse, r.Input("dloss", [5], dtype: r.StatType), dlogits);
            r.Output("dlogits_acc", dlogits);
        });
        Raw("dropout_backward_acc", r =>
        {
            var dx = r.Input("dx", [3, 17]);
            r.Backend.DropoutBackward(r.Input("dy", [3, 17]), 0.5f, 42, 1UL << 33, dx);
            r.Output("dx", dx);
        });
        Raw("adamw_3_steps", r =>
        {
            var be = r.Backend;
            var p = r.Input("p", [3, 17]); var p2 = r.Input("p2", [5]);
            var mt = r.DType == DType.F64 ? DType.F64 : DType.F32;
            Tensor? master = null, master2 = null;
            if (r.DType == DType.BF16)
            {
                master = r.Keep("master", be.Empty([3, 17], DType.F32)); be.Cast(p, master);
                master2 = r.Keep("master2", be.Empty([5], DType.F32)); be.Cast(p2, master2);
            }
            var m = r.Keep("m", be.Zeros([3, 17], mt)); var v = r.Keep("v", be.Zeros([3, 17], mt));
            var m2 = r.Keep("m2", be.Zeros([5], mt)); var v2 = r.Keep("v2", be.Zeros([5], mt));
            for (int step = 1; step <= 3; step++)
            {
                var g = r.Input($"g{step}", [3, 17]); var g2 = r.Input($"g2_{step}", [5], -3, 3);
                be.AdamW([new AdamWTensor(p, g, m, v, master, 1e-2f, 0.1f), new AdamWTensor(p2, g2, m2, v2, master2, 3e-2f, 0f)],
                    0.9f, 0.98f, 1e-6f, step, 0.5f);
            }
            r.Output("w", master ?? p); r.Output("w2", master2 ?? p2); r.Output("m", m); r.Output("v", v);
        });
        return l;
    }
}
