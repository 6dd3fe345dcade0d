//go:build stowagebench

package main

import (
	"net/http"
	_ "net/http/pprof" // bench builds only: profiles for make bench's analysis
	"os"
)

// A stowagebench build serves pprof on $STOWAGE_PPROF (e.g. 127.0.0.1:6060)
// so the benchmark's misses can be profiled; the shipped binary has no such
// listener.
func init() {
	if addr := os.Getenv("STOWAGE_PPROF"); addr != "" {
		go http.ListenAndServe(addr, nil)
	}
}
