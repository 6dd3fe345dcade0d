package store

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"testing"
	"time"
)

// encode writes byte for byte what json.Marshal writes, and fails where it
// fails: a record is read back by fastDecode and by encoding/json alike.
func TestEncodeMatchesEncodingJSON(t *testing.T) {
	vols := sampleVolumes()
	r := rand.New(rand.NewSource(1))
	str := func() string {
		const alphabet = "abcXYZ09_-./<>&\"\\ é\u2028\x7f\x00"
		rs := []rune(alphabet)
		b := make([]rune, r.Intn(6))
		for i := range b {
			b[i] = rs[r.Intn(len(rs))]
		}
		return string(b)
	}
	strMap := func() map[string]string {
		if r.Intn(3) == 0 {
			return nil
		}
		m := map[string]string{}
		for i := r.Intn(4); i > 0; i-- {
			m[str()] = str()
		}
		return m
	}
	when := func() time.Time {
		switch r.Intn(5) {
		case 0:
			return time.Time{}
		case 1:
			return time.Unix(r.Int63n(1e10), r.Int63n(1e9)).In(time.FixedZone("Z", 3600*r.Intn(12)))
		case 2:
			return time.Date(10000+r.Intn(5), 1, 1, 0, 0, 0, 0, time.UTC) // encoding/json refuses it
		}
		return time.Unix(r.Int63n(1e10), r.Int63n(1e9)).UTC()
	}
	for i := 0; i < 3000; i++ {
		v := &Volume{Name: str(), Backend: str(), Options: strMap(), CreatedAt: when(), Private: strMap(), Requested: strMap()}
		if r.Intn(2) == 0 {
			v.Mounts = map[string]Mount{}
			for k := r.Intn(3); k > 0; k-- {
				v.Mounts[str()] = Mount{Count: r.Intn(2000) - 5, Boot: str(), Since: when()}
			}
		}
		vols = append(vols, v)
	}
	refused := 0
	for _, v := range vols {
		want, werr := json.Marshal(v)
		got, gerr := encode(v)
		if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
			t.Fatalf("%+v: encode error %v, json.Marshal error %v", v, gerr, werr)
		}
		if werr != nil {
			refused++
			continue
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("encoded %+v as\n%s\njson.Marshal writes\n%s", v, got, want)
		}
	}
	if refused == 0 || refused == len(vols) {
		t.Fatalf("%d of %d volumes refused: the error path is not covered", refused, len(vols))
	}
}

func BenchmarkEncodeRecord(b *testing.B) {
	v := sampleVolumes()[9]
	for i := 0; i < b.N; i++ {
		if _, err := encode(v); err != nil {
			b.Fatal(err)
		}
	}
}
