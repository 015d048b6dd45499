package cluster

import (
	"fmt"
	"hash/fnv"
	"testing"

	"charla"
)

func TestShardOfIsFNV1aModShards(t *testing.T) {
	tests := []struct {
		conv   charla.ConvID
		shards int
		want   int
	}{
		// Pinned: every node of every version must agree on these forever.
		{"hello", 64, 43}, // fnv32a("hello") = 0x4f9f2cab
		{"hello", 1, 0},
		{"", 64, int(uint32(2166136261) % 64)}, // the offset basis
		{"support:42", 64, ShardOf("support:42", 64)},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.conv, tt.shards), func(t *testing.T) {
			if got := ShardOf(tt.conv, tt.shards); got != tt.want {
				t.Fatalf("ShardOf(%q, %d) = %d, want %d", tt.conv, tt.shards, got, tt.want)
			}
			h := fnv.New32a()
			h.Write([]byte(tt.conv))
			if got, want := ShardOf(tt.conv, tt.shards), int(h.Sum32()%uint32(tt.shards)); got != want {
				t.Fatalf("ShardOf(%q, %d) = %d, hash/fnv says %d", tt.conv, tt.shards, got, want)
			}
		})
	}
}

func TestShardOfSpreads(t *testing.T) {
	const shards, convs = 64, 10000
	counts := make([]int, shards)
	for i := 0; i < convs; i++ {
		conv := charla.ConvID(fmt.Sprintf("conv-%d", i))
		s := ShardOf(conv, shards)
		if s < 0 || s >= shards {
			t.Fatalf("ShardOf(%q) = %d, out of [0, %d)", conv, s, shards)
		}
		if again := ShardOf(conv, shards); again != s {
			t.Fatalf("ShardOf(%q) is not stable: %d then %d", conv, s, again)
		}
		counts[s]++
	}
	// 156 expected per shard; a fair hash stays well within [78, 234].
	for s, n := range counts {
		if n < convs/shards/2 || n > convs/shards*3/2 {
			t.Errorf("shard %d got %d of %d conversations; want about %d", s, n, convs, convs/shards)
		}
	}
}

func TestShardOfPanicsOnNoShards(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("ShardOf(conv, 0) did not panic")
		}
	}()
	ShardOf("x", 0)
}

func BenchmarkShardOf(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ShardOf("support:customer-1234567", 64)
	}
}
