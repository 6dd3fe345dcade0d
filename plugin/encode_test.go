package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/driver"
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

// The requests with a plain form (Get, Remove, Path: a name; Mount,
// Unmount: a name and an ID) are what dockerd sends, or anything else: the
// fast read takes exactly what json.Decoder takes, and refuses what it
// refuses.
func FuzzPlainRequestsDecodeAsJSONDecoder(f *testing.F) {
	id := strings.Repeat("0a", 32)
	for _, s := range []string{
		`{"Name":"v0001234"}`, `{"Name":"v"}` + "\n", `{"Name":""}`, `{"name":"v"}`, `{"Name":"a\"b"}`,
		`{"Name":"a\\u0041"}`, `{"Name":"é"}`, `{"Name":"v"}x`, `{"Name":"v"} {"Name":"w"}`, `{"Name":"v","Name":"w"}`,
		`{"Name":"a","x":"b"}`, `{"Name":5}`, `{"Name":"v"`, `{"Name":"` + "\x7f\x01" + `"}`, ``, `null`, ` {"Name":"v"}`,
		`{"Name":"v","ID":"` + id + `"}` + "\n", `{"Name":"v","ID":""}`, `{"ID":"x","Name":"v"}`, `{"Name":"v","ID":"x","ID":"y"}`,
		`{"Name":"v","ID":"a\\"}`, `{"Name":"v",  "ID":"x"}`, `{"Name":"v","ID":"x"`, `{"Name":"v","Id":"x"}`, `{"Name":"v","ID":7}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, pair := range [][2]interface{}{
			{&volume.GetRequest{}, &volume.GetRequest{}},
			{&volume.RemoveRequest{}, &volume.RemoveRequest{}},
			{&volume.PathRequest{}, &volume.PathRequest{}},
			{&volume.MountRequest{}, &volume.MountRequest{}},
			{&volume.UnmountRequest{}, &volume.UnmountRequest{}},
		} {
			want, got := pair[0], pair[1]
			werr := json.NewDecoder(strings.NewReader(body)).Decode(want)
			gerr := decodeRequest(strings.NewReader(body), int64(len(body)), got)
			if !reflect.DeepEqual(got, want) || (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
				t.Fatalf("%q: decoded %+v (%v), json.Decoder %+v (%v)", body, got, gerr, want, werr)
			}
		}
	})
}

// dockerd's own bodies take the fast read.
func TestDockerdBodiesArePlain(t *testing.T) {
	id := strings.Repeat("0a", 32)
	for _, c := range []struct {
		req  interface{}
		want interface{}
	}{
		{&volume.GetRequest{Name: "v1"}, &volume.GetRequest{}},
		{&volume.RemoveRequest{Name: "v1"}, &volume.RemoveRequest{}},
		{&volume.PathRequest{Name: "v1"}, &volume.PathRequest{}},
		{&volume.MountRequest{Name: "v1", ID: id}, &volume.MountRequest{}},
		{&volume.UnmountRequest{Name: "v1", ID: id}, &volume.UnmountRequest{}},
	} {
		body := encodingJSON(t, c.req) // as dockerd's plugin client writes it
		if !decodePlain(body, c.want) || !reflect.DeepEqual(c.want, c.req) {
			t.Errorf("%s: read as %+v by the fast read, want %+v", body, c.want, c.req)
		}
	}
}

// The real driver answers Get through AppendGet.
var _ GetAppender = (*driver.Driver)(nil)

// declining answers through Get when AppendGet declines, and errors as Get.
type declining struct {
	volume.Driver
	ok  bool
	err error
}

func (d declining) AppendGet(dst []byte, req *volume.GetRequest) ([]byte, bool, error) {
	return append(dst, "{\"Volume\":{\"Name\":\"appended\"}}\n"...), d.ok, d.err
}

func TestGetAnswersThroughAppendGetOrGet(t *testing.T) {
	real := newRealDriver(t, t.TempDir())
	if err := real.Create(&volume.CreateRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	for _, c := range []struct {
		d      declining
		status int
		body   string
	}{
		{declining{real, true, nil}, 200, "{\"Volume\":{\"Name\":\"appended\"}}\n"},
		{declining{real, false, nil}, 200, "{\"Volume\":{\"Name\":\"v\",\"Mountpoint\":"},
		{declining{real, true, errors.New("volume \"v\": broken")}, 500, "{\"Err\":\"volume \\\"v\\\": broken\"}\n"},
	} {
		for i := 0; i < 3; i++ { // answers come from reused buffers
			rec := httptest.NewRecorder()
			NewHandler(c.d, HandlerOptions{Log: log}).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/VolumeDriver.Get", strings.NewReader(`{"Name":"v"}`)))
			if rec.Code != c.status || !strings.HasPrefix(rec.Body.String(), c.body) || rec.Header().Get("Content-Type") != "application/vnd.docker.plugins.v1.1+json" {
				t.Fatalf("ok %v err %v: %d %q %v", c.d.ok, c.d.err, rec.Code, rec.Body.String(), rec.Header())
			}
		}
	}
}
