package driver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/store"
)

// The plugin handler streams List through WriteList when the driver has it.
var _ interface{ WriteList(io.Writer) error } = (*Driver)(nil)

func TestWriteListIsByteForByteWhatListEncodesTo(t *testing.T) {
	d, _, st := fixture(t)
	// More than one Scan chunk, created concurrently to keep the test short.
	const n = 1100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				if err := st.Create(&store.Volume{Name: fmt.Sprintf("v%05d", i), Backend: "fake", CreatedAt: time.Unix(int64(1e9+i), 0).UTC()}); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A name that needs JSON escaping, and a volume whose backend is gone
	// (listed without a mountpoint), recorded directly.
	for _, v := range []*store.Volume{{Name: `odd<&>"\` + "\u00e9", Backend: "fake"}, {Name: "orphan", Backend: "gone"}} {
		if err := st.Create(v); err != nil {
			t.Fatal(err)
		}
	}
	res, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	var want, got bytes.Buffer
	if err := json.NewEncoder(&want).Encode(res); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteList(&got); err != nil {
		t.Fatal(err)
	}
	if len(res.Volumes) != n+2 {
		t.Fatalf("List has %d volumes, want %d", len(res.Volumes), n+2)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		w, g := want.String(), got.String()
		for i := 0; i < len(w) && i < len(g); i++ {
			if w[i] != g[i] {
				t.Fatalf("WriteList differs from List's JSON at byte %d:\nwant …%s…\ngot  …%s…", i, w[max(0, i-80):min(len(w), i+80)], g[max(0, i-80):min(len(g), i+80)])
			}
		}
		t.Fatalf("WriteList wrote %d bytes, List's JSON is %d", len(g), len(w))
	}
}

func TestWriteListOfNoVolumesIsAnEmptyList(t *testing.T) {
	d, _, _ := fixture(t)
	var got bytes.Buffer
	if err := d.WriteList(&got); err != nil {
		t.Fatal(err)
	}
	if got.String() != "{\"Volumes\":[]}\n" {
		t.Fatalf("got %q", got.String())
	}
}
