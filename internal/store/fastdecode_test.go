package store

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func sampleVolumes() []*Volume {
	return []*Volume{
		{Name: "v1", Backend: "dir", Options: map[string]string{"mode": "0755"}, CreatedAt: time.Date(2026, 11, 21, 11, 41, 45, 0, time.UTC)},
		{Name: "v2", Backend: "dir", CreatedAt: time.Unix(1e9, 0).UTC()},
		{Name: "zero", Backend: "dir"},
		{Name: "p", Backend: "image", Options: map[string]string{"gid": "5", "mode": "0700", "size": "1048576", "uid": "7"}, Private: map[string]string{"file": "/x/p.img", "fs": "ext4"}, CreatedAt: time.Unix(5, 0).UTC()},
		{Name: "clone", Backend: "dir", Options: map[string]string{"from": "p", "size": "1048576", "uid": "7"}, CreatedAt: time.Unix(5, 0).UTC(), Requested: map[string]string{"from": "p"}},
		{Name: "nanos", Backend: "dir", CreatedAt: time.Unix(5, 7).UTC()},
		{Name: "local-zone", Backend: "dir", CreatedAt: time.Unix(5, 0).In(time.FixedZone("X", 3600))},
		{Name: "esc<&>\"", Backend: "dir", Options: map[string]string{"path": "/a\\b"}},
		{Name: "unicode-é", Backend: "dir"},
		{Name: "m", Backend: "dir", Mounts: map[string]Mount{"abc": {Count: 2, Boot: "b", Since: time.Unix(9, 0).UTC()}}},
		{Name: "m2", Backend: "dir", CreatedAt: time.Unix(5, 0).UTC(), Options: map[string]string{"mode": "0755"}, Mounts: map[string]Mount{
			"0a1b": {Count: 1, Boot: "5c0ad7e2-8d2b-4f55-a5a4-0d5e3e1f2a3b", Since: time.Unix(1e9, 123456789).UTC()},
			"ffff": {Count: 10, Boot: "b", Since: time.Unix(1e9, 0).UTC()},
			"zero": {Count: 0, Boot: "", Since: time.Unix(7, 1000).In(time.FixedZone("Y", -7200))},
		}, Private: map[string]string{"k": "v"}},
		{Name: "", Backend: "", Options: map[string]string{"": ""}},
	}
}

func sampleRecords(t testing.TB) [][]byte {
	var out [][]byte
	for _, v := range sampleVolumes() {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out,
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-11-21T11:41:45Z","extra":1}`),
		[]byte(`{"name":"v","backend":"dir","options":{"b":"1","a":"2"},"created_at":"2026-11-21T11:41:45Z"}`),
		[]byte(`{"name":"v","backend":"dir","options":{"a":"1","a":"2"},"created_at":"2026-11-21T11:41:45Z"}`),
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-13-21T11:41:45Z"}`),
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-11-21T11:41:45Z"} `),
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-11-21T11:41:45Z"`),
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-11-21T11:41:45Z","mounts":{"a":{"count":01,"boot":"b","since":"2026-11-21T11:41:45Z"}}}`),
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-11-21T11:41:45Z","mounts":{"b":{"count":1,"boot":"b","since":"2026-11-21T11:41:45Z"},"a":{"count":1,"boot":"b","since":"2026-11-21T11:41:45Z"}}}`),
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-11-21T11:41:45Z","mounts":{"a":{"count":-1,"boot":"b","since":"2026-11-21T11:41:45Z"}}}`),
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-11-21T11:41:45Z","mounts":{"a":{"count":1234567890,"boot":"b","since":"2026-11-21T11:41:45Z"}}}`),
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-11-21T11:41:45Z","mounts":{"a":{"count":1,"boot":"b","since":"2026-11-21T11:41:45.5+01:00"}}}`),
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-11-21T11:41:45Z","mounts":{"a":{"count":1,"boot":"b","since":"2026-11-21 11:41:45"}}}`),
		[]byte(`{"name":"v","backend":"dir","created_at":"2026-11-21T11:41:45Z","mounts":{}}`),
	)
}

// checkAgrees fails if fastDecode accepts a record encoding/json reads
// differently, or rejects.
func checkAgrees(t testing.TB, rec []byte) (fast bool) {
	got, ok := fastDecode(rec)
	// fastBackend walks the same shape: it reads exactly the records
	// fastDecode reads, and the same backend.
	b, bok := fastBackend(rec)
	if bok != ok || (ok && string(b) != got.Backend) {
		t.Fatalf("fastBackend(%s) = %q, %v; fastDecode: %+v, %v", rec, b, bok, got, ok)
	}
	if !ok {
		return false
	}
	var want Volume
	if err := json.Unmarshal(rec, &want); err != nil {
		t.Fatalf("fastDecode accepted %s, which encoding/json rejects: %v", rec, err)
	}
	if !reflect.DeepEqual(got, &want) {
		t.Fatalf("fastDecode read %s as %+v; encoding/json reads %+v", rec, got, want)
	}
	return true
}

func TestFastDecodeAgreesWithEncodingJSON(t *testing.T) {
	fast := 0
	for _, rec := range sampleRecords(t) {
		if checkAgrees(t, rec) {
			fast++
		}
	}
	// The common shapes must take the fast path, or List is slow again.
	for _, i := range []int{0, 1, 2, 3, 4, 9, 10} {
		if _, ok := fastDecode(sampleRecords(t)[i]); !ok {
			t.Errorf("record %s should take the fast path", sampleRecords(t)[i])
		}
	}
	if fast < 4 {
		t.Errorf("only %d records took the fast path", fast)
	}
}

func FuzzFastDecodeAgreesWithEncodingJSON(f *testing.F) {
	for _, rec := range sampleRecords(f) {
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, rec []byte) { checkAgrees(t, rec) })
}

func BenchmarkDecodeRecord(b *testing.B) {
	rec := sampleRecords(b)[0]
	for i := 0; i < b.N; i++ {
		if _, err := decode([]byte("v1"), rec); err != nil {
			b.Fatal(err)
		}
	}
}
