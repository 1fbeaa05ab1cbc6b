namespace FiberCuda.Data;

/// <summary>
/// Small deterministic RNG for the data pipeline. Everything random in Data (shuffles, MLM masks, synthetic scenes,
/// replacement of bad samples) derives from <see cref="Hash"/> of a seed and stable indices, never from a shared
/// sequential stream, so the result does not depend on which worker thread did the work or in which order.
/// </summary>
public struct DataRng
{
    ulong _state;

    public DataRng(ulong seed) => _state = seed;

    /// <summary>SplitMix64 finaliser: a bijective 64-bit mixer.</summary>
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public static ulong Hash(ulong a, ulong b) => Mix(Mix(a + 0x9E3779B97F4A7C15UL) ^ (b * 0xD1B54A32D192ED03UL + 0x632BE59BD9B4E019UL));
    public static ulong Hash(ulong a, ulong b, ulong c) => Hash(Hash(a, b), c);
    public static ulong Hash(ulong a, ulong b, ulong c, ulong d) => Hash(Hash(Hash(a, b), c), d);

    public ulong NextU64()
    {
        _state += 0x9E3779B97F4A7C15UL;
        return Mix(_state);
    }

    /// <summary>Uniform in [0, n) without modulo bias (Lemire's multiply-shift with rejection).</summary>
    public int NextInt(int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n));
        ulong range = (ulong)n;
        while (true)
        {
            ulong x = NextU64() >> 32;
            ulong m = x * range;
            uint low = (uint)m;
            if (low >= (uint)n || low >= (uint)((0x1_0000_0000UL - range) % range)) return (int)(m >> 32);
        }
    }

    public int NextInt(int lo, int hiExclusive) => lo + NextInt(hiExclusive - lo);

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextU64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Fisher–Yates permutation of 0..n-1.</summary>
    public static int[] Permutation(int n, ulong seed)
    {
        var p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        var rng = new DataRng(seed);
        for (int i = n - 1; i > 0; i--)
        {
            int j = rng.NextInt(i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }
}
