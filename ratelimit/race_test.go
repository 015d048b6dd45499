//go:build race

package ratelimit_test

// raceEnabled shrinks the memory test under the race detector, which makes
// every map operation several times slower; the figure per key is the same.
const raceEnabled = true
