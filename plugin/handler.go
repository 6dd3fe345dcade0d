// Package plugin puts a volume.Driver on Docker's plugin transport: the
// HTTP protocol, the listeners, and a graceful shutdown.
//
// It uses go-plugins-helpers' request and response types, but owns the HTTP
// mux and server: the helpers' server can neither cap request bodies, time
// out slow clients nor shut down gracefully.
package plugin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/sdk"
	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
)

// MaxBodyBytes caps a request body. Docker's largest request is a Create
// with its options: a few KiB.
const MaxBodyBytes = 1 << 20

const manifest = `{"Implements": ["VolumeDriver"]}`

// Observer is told about every request, for metrics.
type Observer func(op string, err error, d time.Duration)

// HandlerOptions tune NewHandler.
type HandlerOptions struct {
	Log      logrus.FieldLogger
	Observer Observer
	// Operator endpoints served beside the protocol's as POST /Stowage.NAME,
	// with the same body cap, decoding, error shape and logging.
	Operator map[string]Endpoint
}

// Endpoint is one operator call: a fresh request value to decode into (nil
// for none) and the call itself.
type Endpoint struct {
	NewRequest func() interface{}
	Call       func(req interface{}) (interface{}, error)
}

// NewHandler returns the HTTP handler serving d as Docker expects.
func NewHandler(d volume.Driver, o HandlerOptions) http.Handler {
	if o.Log == nil {
		o.Log = logrus.New()
	}
	mux := http.NewServeMux()
	h := &handler{log: o.Log, observe: o.Observer}
	h.getBufs.New = func() interface{} { b := make([]byte, 0, 512); return &b }
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		if !h.post(w, r) {
			return
		}
		w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
		fmt.Fprintln(w, manifest)
	})
	route := func(op string, req func() interface{}, call func(req interface{}) (interface{}, error)) {
		mux.HandleFunc("/VolumeDriver."+op, func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, op, req, call) })
	}
	route("Create", func() interface{} { return &volume.CreateRequest{} }, func(r interface{}) (interface{}, error) {
		return struct{}{}, d.Create(r.(*volume.CreateRequest))
	})
	route("Remove", func() interface{} { return &volume.RemoveRequest{} }, func(r interface{}) (interface{}, error) {
		return struct{}{}, d.Remove(r.(*volume.RemoveRequest))
	})
	route("Mount", func() interface{} { return &volume.MountRequest{} }, func(r interface{}) (interface{}, error) {
		return d.Mount(r.(*volume.MountRequest))
	})
	route("Unmount", func() interface{} { return &volume.UnmountRequest{} }, func(r interface{}) (interface{}, error) {
		return struct{}{}, d.Unmount(r.(*volume.UnmountRequest))
	})
	route("Path", func() interface{} { return &volume.PathRequest{} }, func(r interface{}) (interface{}, error) {
		return d.Path(r.(*volume.PathRequest))
	})
	route("Get", func() interface{} { return &volume.GetRequest{} }, h.getCall(d))
	if lw, ok := d.(ListWriter); ok {
		mux.HandleFunc("/VolumeDriver.List", func(w http.ResponseWriter, r *http.Request) { h.stream(w, r, "List", lw.WriteList) })
	} else {
		route("List", nil, func(interface{}) (interface{}, error) { return d.List() })
	}
	route("Capabilities", nil, func(interface{}) (interface{}, error) { return d.Capabilities(), nil })
	for name, ep := range o.Operator {
		name, ep := name, ep
		mux.HandleFunc("/Stowage."+name, func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, name, ep.NewRequest, ep.Call) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, volume.ErrorResponse{Err: fmt.Sprintf("unknown endpoint %s: this is a Docker volume plugin (VolumeDriver API)", r.URL.Path)})
	})
	return mux
}

type handler struct {
	log     logrus.FieldLogger
	observe Observer
	// getBufs hold Get's answers between the driver and the connection's
	// writer, which copies them.
	getBufs sync.Pool
}

// GetAppender is implemented by a driver that writes Get's answer itself:
// the bytes writeJSON would write for its Get's *volume.GetResponse,
// without building it. ok false sends the call through Get instead.
type GetAppender interface {
	AppendGet(dst []byte, req *volume.GetRequest) (b []byte, ok bool, err error)
}

// answer is a call's encoded answer, in a buffer of the handler's getBufs.
type answer []byte

func (h *handler) getCall(d volume.Driver) func(interface{}) (interface{}, error) {
	ga, ok := d.(GetAppender)
	if !ok {
		return func(r interface{}) (interface{}, error) { return d.Get(r.(*volume.GetRequest)) }
	}
	return func(r interface{}) (interface{}, error) {
		bp := h.getBufs.Get().(*[]byte)
		b, ok, err := ga.AppendGet((*bp)[:0], r.(*volume.GetRequest))
		if err != nil || !ok {
			h.getBufs.Put(bp)
			if err != nil {
				return nil, err
			}
			return d.Get(r.(*volume.GetRequest))
		}
		*bp = b
		return (*answer)(bp), nil
	}
}

func (h *handler) post(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, volume.ErrorResponse{Err: fmt.Sprintf("method %s is not allowed: plugin calls are POST", r.Method)})
		return false
	}
	return true
}

// done writes a request's log line and tells the observer. The line's
// fields are built only if it is logged: Get, the hottest call, is not at
// the default level.
func (h *handler) done(op string, req interface{}, start time.Time, status int, err error) {
	d := time.Since(start)
	if h.observe != nil {
		h.observe(op, err, d)
	}
	level, msg := logrus.InfoLevel, "request"
	switch {
	case err != nil && op == "Get":
		// Docker asks Get before every create: "no such volume" is routine.
		level, msg = logrus.DebugLevel, "request refused"
	case err != nil:
		level, msg = logrus.WarnLevel, "request failed"
	case op == "Get" || op == "List" || op == "Capabilities" || op == "Path":
		level = logrus.DebugLevel
	}
	if l, ok := h.log.(interface{ IsLevelEnabled(logrus.Level) bool }); ok && !l.IsLevelEnabled(level) {
		return
	}
	fields := logrus.Fields{"op": op}
	addFields(fields, req)
	fields["duration"] = d
	fields["status"] = status
	entry := h.log.WithFields(fields)
	if err != nil {
		entry = entry.WithError(err)
	}
	entry.Log(level, msg)
}

// ListWriter is implemented by a driver that writes List's answer itself,
// streaming, so the daemon's memory does not grow with the number of volumes.
type ListWriter interface {
	WriteList(w io.Writer) error
}

// sentCounter counts bytes that reached the client's connection.
type sentCounter struct {
	w io.Writer
	n int64
}

func (c *sentCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// stream serves a call without a request body whose answer the driver
// writes itself. An error before anything was sent is an ordinary error
// answer; after that the connection is cut, so the client sees a broken
// answer, never a short list that looks whole.
func (h *handler) stream(w http.ResponseWriter, r *http.Request, op string, write func(io.Writer) error) {
	start := time.Now()
	var err error
	status := http.StatusOK
	defer func() { h.done(op, nil, start, status, err) }()
	if !h.post(w, r) {
		status, err = http.StatusMethodNotAllowed, errors.New("method not allowed")
		return
	}
	io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
	sent := &sentCounter{w: w}
	bw := bufio.NewWriterSize(sent, 64<<10)
	if err = write(bw); err == nil {
		err = bw.Flush()
	}
	if err == nil {
		return
	}
	status = http.StatusInternalServerError
	if sent.n == 0 {
		writeJSON(w, status, volume.ErrorResponse{Err: err.Error()})
		return
	}
	panic(http.ErrAbortHandler)
}

// serve decodes one call, runs it and writes the answer and one log line.
func (h *handler) serve(w http.ResponseWriter, r *http.Request, op string, newReq func() interface{}, call func(interface{}) (interface{}, error)) {
	start := time.Now()
	var err error
	var req interface{}
	status := http.StatusOK
	defer func() { h.done(op, req, start, status, err) }()
	if !h.post(w, r) {
		status, err = http.StatusMethodNotAllowed, errors.New("method not allowed")
		return
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if newReq != nil {
		req = newReq()
		if err = decodeRequest(body, r.ContentLength, req); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				status = http.StatusRequestEntityTooLarge
				err = fmt.Errorf("request body is larger than %d bytes", MaxBodyBytes)
			} else {
				status = http.StatusBadRequest
				err = fmt.Errorf("request body is not a valid %s request: %v", op, err)
			}
			writeJSON(w, status, volume.ErrorResponse{Err: err.Error()})
			return
		}
	}
	res, cerr := call(req)
	// Drained after the call: reaching the body's end starts net/http's
	// background read of the connection, a goroutine that would otherwise
	// be scheduled while the call waits on the disk. (json.Decoder stops at
	// the value's end; a plain read, which takes the whole body, has
	// reached it already.)
	io.Copy(io.Discard, body)
	if cerr != nil {
		err = cerr
		status = http.StatusInternalServerError
		writeJSON(w, status, volume.ErrorResponse{Err: err.Error()})
		return
	}
	if a, ok := res.(*answer); ok {
		send(w, http.StatusOK, *a)
		if cap(*a) <= 64<<10 {
			h.getBufs.Put((*[]byte)(a))
		}
		return
	}
	if g, ok := res.(*volume.GetResponse); ok {
		if b, ok := appendGetResponse(make([]byte, 0, 512), g); ok {
			send(w, http.StatusOK, b)
			return
		}
	}
	writeJSON(w, http.StatusOK, res)
}

// decodeRequest decodes body, of length bytes (-1: unknown), into req. The
// bodies dockerd sends for Get, Remove, Path, Mount and Unmount are read
// whole and taken by decodePlain when they are exactly what dockerd sends;
// anything else goes to json.Decoder, which then reads the same bytes.
func decodeRequest(body io.Reader, length int64, req interface{}) error {
	if length > 0 && length <= 512 && decodePlain(nil, req) {
		buf := make([]byte, length)
		n, err := io.ReadFull(body, buf)
		if err == nil && decodePlain(buf, req) {
			return nil
		}
		body = io.MultiReader(bytes.NewReader(buf[:n]), body)
	}
	return json.NewDecoder(body).Decode(req)
}

// decodePlain fills req from body if body is in the plain form dockerd
// sends for req's call (see plainFields). With a nil body it only tells
// whether req's call has such a form.
func decodePlain(body []byte, req interface{}) bool {
	switch r := req.(type) {
	case *volume.GetRequest:
		return body == nil || plainFields(body, nameKey, &r.Name)
	case *volume.RemoveRequest:
		return body == nil || plainFields(body, nameKey, &r.Name)
	case *volume.PathRequest:
		return body == nil || plainFields(body, nameKey, &r.Name)
	case *volume.MountRequest:
		return body == nil || plainFields(body, nameIDKeys, &r.Name, &r.ID)
	case *volume.UnmountRequest:
		return body == nil || plainFields(body, nameIDKeys, &r.Name, &r.ID)
	}
	return false
}

func addFields(f logrus.Fields, req interface{}) {
	switch r := req.(type) {
	case *volume.CreateRequest:
		f["volume"] = r.Name
	case *volume.RemoveRequest:
		f["volume"] = r.Name
	case *volume.MountRequest:
		f["volume"], f["mount_id"] = r.Name, r.ID
	case *volume.UnmountRequest:
		f["volume"], f["mount_id"] = r.Name, r.ID
	case *volume.PathRequest:
		f["volume"] = r.Name
	case *volume.GetRequest:
		f["volume"] = r.Name
	}
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		status = http.StatusInternalServerError
		b.Reset()
		json.NewEncoder(&b).Encode(volume.ErrorResponse{Err: fmt.Sprintf("encoding the answer failed: %v", err)})
	}
	send(w, status, b.Bytes())
}

// send writes a whole answer with its length and puts it on the wire at
// once: the client has its answer while the request's log line is
// formatted and written, not after (a Mount+Unmount pair 4-5 % sooner on
// this project's machines). A crash in between loses the line, never the
// answer's effect.
func send(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", sdk.DefaultContentTypeV1_1)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}
