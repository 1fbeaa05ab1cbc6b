using FiberCuda.Nn;
using FiberCuda.Optim;

namespace FiberCuda.Models;

public enum FiberLrGroup { Base, CrossModal, Head }

/// <summary>
/// The official optimizer grouping (fiber-coarse.md §4.3, `fiber_utils.set_schedule`), by substring match on the
/// parameter's full name: cross-modal (`cross_modal`, `i2t`, `t2i`) and head names get lr multipliers; names
/// containing `bias` or one of the LayerNorm/norm patterns get no weight decay. Side effects the string rules
/// imply are kept: `relative_position_bias_table` is not decayed, `norm_i2t_i.weight` and the α gates are.
/// </summary>
public static class FiberParamGroups
{
    static readonly string[] NoDecayPatterns =
        ["bias", "LayerNorm.bias", "LayerNorm.weight", "norm.bias", "norm.weight", "norm1.bias", "norm1.weight", "norm2.bias", "norm2.weight"];
    static readonly string[] HeadPatterns = ["vqa_classifier", "nlvr2_classifier", "mlm_score", "itm_score", "snli_classifier"];
    static readonly string[] CrossModalPatterns = ["cross_modal", "i2t", "t2i"];

    public static bool NoDecay(string name) => NoDecayPatterns.Any(name.Contains);

    public static FiberLrGroup GroupOf(string name) =>
        CrossModalPatterns.Any(name.Contains) ? FiberLrGroup.CrossModal
        : HeadPatterns.Any(name.Contains) ? FiberLrGroup.Head
        : FiberLrGroup.Base;

    /// <summary>Six AdamW groups (base / cross-modal / head × decay / no decay), empty ones left out, named like "cross_modal/no_decay".</summary>
    public static List<ParamGroup> Build(Module model, float lr, float weightDecay = 0.01f, float crossModalMult = 5f, float headMult = 5f) =>
        Build(model.NamedParameters().ToList(), lr, weightDecay, crossModalMult, headMult);

    /// <summary>The same over named parameters gathered from several root-level modules (backbone + heads).</summary>
    public static List<ParamGroup> Build(IReadOnlyList<(string Name, Tensors.Tensor Tensor)> parameters, float lr, float weightDecay = 0.01f,
        float crossModalMult = 5f, float headMult = 5f)
    {
        var groups = new List<ParamGroup>();
        foreach (var g in Enum.GetValues<FiberLrGroup>())
            foreach (bool decay in new[] { true, false })
            {
                var ps = parameters.Where(p => GroupOf(p.Name) == g && NoDecay(p.Name) != decay).Select(p => p.Tensor).ToList();
                if (ps.Count == 0) continue;
                float mult = g switch { FiberLrGroup.CrossModal => crossModalMult, FiberLrGroup.Head => headMult, _ => 1f };
                string name = (g switch { FiberLrGroup.CrossModal => "cross_modal", FiberLrGroup.Head => "head", _ => "base" }) + (decay ? "/decay" : "/no_decay");
                groups.Add(new ParamGroup(ps, lr * mult, decay ? weightDecay : 0f, name));
            }
        return groups;
    }
}
