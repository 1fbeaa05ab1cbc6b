using System.Text.Json;
using FiberCuda.IO;

namespace FiberCuda.Tests.IO;

/// <summary>Paths and expectations of the files written by tools/fixtures/make_weight_fixtures.py (real torch 1.13).</summary>
static class Fixture
{
    public static string Dir => Path.Combine(AppContext.BaseDirectory, "Fixtures", "weights");
    public static string P(string name) => Path.Combine(Dir, name);

    public sealed record Expected(string DType, long[] Shape, double[] Values);

    public static Dictionary<string, Expected> ExpectedValues(string jsonFile)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(P(jsonFile)));
        var d = new Dictionary<string, Expected>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            var shape = p.Value.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            var vals = p.Value.GetProperty("values").EnumerateArray().Select(x => x.ValueKind switch
            {
                JsonValueKind.True => 1.0, JsonValueKind.False => 0.0, _ => x.GetDouble(),
            }).ToArray();
            d[p.Name] = new Expected(p.Value.GetProperty("dtype").GetString()!, shape, vals);
        }
        return d;
    }

    public static Dictionary<string, long[]> Keys(string jsonFile)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(P(jsonFile)));
        return doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(x => x.GetInt64()).ToArray());
    }

    public static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "fibercuda-io-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }

    public static void AssertTensor(Expected e, HostTensor t, string name)
    {
        Assert.AreEqual(e.DType, t.DType.SafetensorsName(), name + " dtype");
        CollectionAssert.AreEqual(e.Shape, t.Shape, name + " shape");
        var v = t.ToDoubles();
        Assert.AreEqual(e.Values.Length, v.Length, name + " numel");
        for (int i = 0; i < v.Length; i++)
            Assert.AreEqual(e.Values[i], v[i], 0.0, $"{name}[{i}]");
    }
}
