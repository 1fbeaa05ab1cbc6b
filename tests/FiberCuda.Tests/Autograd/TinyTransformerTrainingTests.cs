using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Optim;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Autograd;

/// <summary>
/// End to end on the CPU: a one-block pre-LN transformer (embeddings, causal attention, GELU MLP,
/// fused residual LayerNorm, dropout, cross-entropy) learns a next-token rule with AdamW and clipping.
/// </summary>
[TestClass]
public sealed class TinyTransformerTrainingTests
{
    const int V = 16, D = 32, T = 8, B = 8, H = 64;

    sealed class Model
    {
        readonly IBackend _be; readonly DType _dt;
        public readonly List<Tensor> Params = new();
        public readonly List<Tensor> NoDecay = new();
        public Tensor Tok, Pos, G1, B1, Wqkv, Bqkv, Wo, Bo, G2, B2, W1, Bm1, W2, Bm2, Gf, Bf, Wout;
        int _seed = 1;

        Tensor P(int[] shape, double scale, bool decay = true, double? fill = null)
        {
            var v = fill is double f ? Enumerable.Repeat(f, (int)ShapeUtil.Numel(shape)).ToArray()
                                     : Check.Rand(_seed++, (int)ShapeUtil.Numel(shape), -scale, scale);
            var t = _be.FromDoubles(v, shape, _dt); t.RequiresGrad = true;
            (decay ? Params : NoDecay).Add(t);
            return t;
        }

        public Model(IBackend be, DType dt)
        {
            _be = be; _dt = dt;
            Tok = P([V, D], 0.5); Pos = P([T, D], 0.1);
            G1 = P([D], 0, false, 1); B1 = P([D], 0, false, 0);
            Wqkv = P([3 * D, D], 0.3); Bqkv = P([3 * D], 0, false, 0);
            Wo = P([D, D], 0.2); Bo = P([D], 0, false, 0);
            G2 = P([D], 0, false, 1); B2 = P([D], 0, false, 0);
            W1 = P([H, D], 0.3); Bm1 = P([H], 0, false, 0);
            W2 = P([D, H], 0.2); Bm2 = P([D], 0, false, 0);
            Gf = P([D], 0, false, 1); Bf = P([D], 0, false, 0);
            Wout = P([V, D], 0.3);
        }

        public Tensor Loss(Tensor ids, Tensor targets, Tensor mask, Tensor posIds, ulong step)
        {
            var x = F.Add(F.Embedding(Tok, ids), F.Embedding(Pos, posIds));         // [B,T,D]
            var h = F.LayerNorm(x, G1, B1);
            var qkv = F.Linear(h, Wqkv, Bqkv);                                      // [B,T,3D]
            var q = F.Slice(qkv, 2, 0, D); var k = F.Slice(qkv, 2, D, D); var v = F.Slice(qkv, 2, 2 * D, D);
            var scores = F.Add(F.MatMul(q, k, transB: true), mask);                  // [B,T,T]
            var att = F.Dropout(F.Softmax(scores, 1f / MathF.Sqrt(D)), 0.1f, 99, step * 4096);
            var o = F.Linear(F.MatMul(att, v), Wo, Bo);
            var (s, h2) = F.LayerNormResidual(o, x, G2, B2);
            var m = F.Linear(F.BiasGelu(F.Linear(h2, W1), Bm1), W2, Bm2);
            var y = F.LayerNorm(F.Add(m, s), Gf, Bf);
            var logits = F.Linear(y, Wout);                                          // [B,T,V]
            return F.CrossEntropy(F.Reshape(logits, B * T, V), targets);
        }
    }

    [TestMethod]
    [DataRow(DType.F32)]
    [DataRow(DType.BF16)]
    public void LearnsNextTokenRule(DType dt)
    {
        var be = Backend.Cpu;
        var model = new Model(be, dt);
        using var opt = new AdamW([new ParamGroup(model.Params, 3e-2f, 0.01f), new ParamGroup(model.NoDecay, 3e-2f, 0f)]);
        var maskV = new double[B * T * T];
        for (int b = 0; b < B; b++) for (int i = 0; i < T; i++) for (int j = 0; j < T; j++) maskV[(b * T + i) * T + j] = j > i ? -1e4 : 0;
        using var mask = be.FromDoubles(maskV, [B, T, T], dt);
        using var posIds = be.FromInts(Enumerable.Range(0, B * T).Select(i => i % T).ToArray(), [B, T]);
        var rng = new Random(5);
        double first = 0, last = 0;
        for (int step = 0; step < 60; step++)
        {
            // next token = (3·current + 1) mod V; the last position's target is ignored
            var ids = new int[B * T]; var tg = new int[B * T];
            for (int b = 0; b < B; b++)
            {
                int cur = rng.Next(V);
                for (int t = 0; t < T; t++) { ids[b * T + t] = cur; cur = (3 * cur + 1) % V; tg[b * T + t] = t == T - 1 ? -100 : cur; }
            }
            using var tIds = be.FromInts(ids, [B, T]); using var tTg = be.FromInts(tg, [B * T]);
            var loss = model.Loss(tIds, tTg, mask, posIds, (ulong)step);
            double l = loss.ToDoubleArray()[0];
            Assert.IsTrue(double.IsFinite(l), $"step {step}: loss {l}");
            if (step == 0) first = l;
            last = step >= 55 ? last + l / 5 : 0;
            opt.ZeroGrad();
            loss.Backward();
            double norm = GradClip.ClipGradNorm(model.Params.Concat(model.NoDecay), 1.0);
            Assert.IsTrue(double.IsFinite(norm));
            opt.Step();
        }
        Assert.IsTrue(first > 2.0, $"initial loss {first} should be near ln {V} = {Math.Log(V):f2}");
        Assert.IsTrue(last < 0.35 * first, $"{dt}: loss went from {first:f3} to {last:f3}");
    }
}
