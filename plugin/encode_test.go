package plugin

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
)

func encodingJSON(t *testing.T, v interface{}) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The hand-written Get encoder writes byte for byte what encoding/json
// writes, for the values stowage's Status holds and for others.
func TestGetEncodingMatchesEncodingJSON(t *testing.T) {
	type odd struct{ A int }
	cases := []*volume.GetResponse{
		{},
		{Volume: &volume.Volume{Name: "a"}},
		{Volume: &volume.Volume{Name: "a<b>&\"\\\u2028é\x01", Mountpoint: "/x/ü", CreatedAt: "2024-01-01T00:00:00Z", Status: map[string]interface{}{}}},
		{Volume: &volume.Volume{Name: "v", Mountpoint: "/m", CreatedAt: "2024-01-01T00:00:00Z", Status: map[string]interface{}{
			"backend": "dir", "options": map[string]string{"z": "1", "a": "<2>", "mode": "0755"}, "mounts": 3,
			"stale_mounts": 1, "problem": "backend \"x\" is not enabled", "size_bytes": uint64(1 << 40), "used_bytes": uint64(0),
			"btrfs_subvolume": true, "nil": nil, "nilmap": map[string]string(nil), "i64": int64(-5),
			"nested": map[string]interface{}{"b": false, "a": []string{"x"}}, "float": 1.5e21, "struct": odd{7}, "bytes": []byte("hi"),
		}}},
	}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 300; i++ {
		st := map[string]interface{}{}
		for k := 0; k < r.Intn(6); k++ {
			key := randString(r)
			switch r.Intn(5) {
			case 0:
				st[key] = randString(r)
			case 1:
				st[key] = r.Intn(1000) - 500
			case 2:
				st[key] = r.Intn(2) == 0
			case 3:
				st[key] = map[string]string{randString(r): randString(r), randString(r): randString(r)}
			case 4:
				st[key] = r.Uint64()
			}
		}
		cases = append(cases, &volume.GetResponse{Volume: &volume.Volume{Name: randString(r), Mountpoint: randString(r), Status: st}})
	}
	for _, c := range cases {
		got, ok := appendGetResponse(nil, c)
		want := encodingJSON(t, c)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("encoded %+v as\n%s\nencoding/json writes\n%s", c.Volume, got, want)
		}
	}
}

func randString(r *rand.Rand) string {
	const alphabet = "abcXYZ09_-./<>&\"\\ é\u2028\x7f\x00"
	rs := []rune(alphabet)
	b := make([]rune, r.Intn(8))
	for i := range b {
		b[i] = rs[r.Intn(len(rs))]
	}
	return string(b)
}
