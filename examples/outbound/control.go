package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/outboundmail/outbound/queue"
)

// The control socket lets operator commands reach a queue whose embedded
// spool is held by a running `outbound run` (one process at a time may
// open it): HTTP on a Unix socket in the spool directory, which only the
// spool's owner can enter. Its protocol is private to this program.
//
//	POST /v1/messages                    body: the message; Outbound-Envelope: JSON queue.Envelope
//	GET  /v1/messages?after=ID&limit=N&state=deferred
//	GET  /v1/messages/{id}
//	GET  /v1/messages/{id}/body
//	POST /v1/messages/{id}/{hold,release,delete,retry}

const envelopeHeader = "Outbound-Envelope"

// serveControl serves b on a Unix socket at path until stop is called.
func serveControl(path string, b backend, log *slog.Logger) (stop func(), err error) {
	// This process holds the spool's lock, so a socket file left there is
	// stale: its server died.
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	srv := &http.Server{Handler: controlHandler(b), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control socket stopped", "error", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		os.Remove(path)
	}, nil
}

func controlHandler(b backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/messages", func(w http.ResponseWriter, r *http.Request) {
		var env queue.Envelope
		if err := json.Unmarshal([]byte(r.Header.Get(envelopeHeader)), &env); err != nil {
			writeError(w, &queue.InvalidMessageError{Field: "Envelope", Reason: err.Error()})
			return
		}
		id, err := b.Enqueue(r.Context(), env, r.Body)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, map[string]string{"id": string(id)})
	})
	mux.HandleFunc("GET /v1/messages", func(w http.ResponseWriter, r *http.Request) {
		p := queue.ListParams{AfterID: queue.ID(r.FormValue("after"))}
		p.Limit, _ = strconv.Atoi(r.FormValue("limit"))
		for _, s := range r.Form["state"] {
			st, ok := parseState(s)
			if !ok {
				http.Error(w, "unknown state "+s, http.StatusBadRequest)
				return
			}
			p.States = append(p.States, st)
		}
		msgs, err := b.List(r.Context(), p)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, msgs)
	})
	mux.HandleFunc("GET /v1/messages/{id}", func(w http.ResponseWriter, r *http.Request) {
		m, err := b.Get(r.Context(), queue.ID(r.PathValue("id")))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, m)
	})
	mux.HandleFunc("GET /v1/messages/{id}/body", func(w http.ResponseWriter, r *http.Request) {
		body, err := b.OpenBody(r.Context(), queue.ID(r.PathValue("id")))
		if err != nil {
			writeError(w, err)
			return
		}
		defer body.Close()
		w.Header().Set("Content-Type", "message/rfc822")
		io.Copy(w, body)
	})
	mux.HandleFunc("POST /v1/messages/{id}/{op}", func(w http.ResponseWriter, r *http.Request) {
		op := map[string]func(context.Context, queue.ID) error{
			"hold": b.Hold, "release": b.Release, "delete": b.Delete, "retry": b.Retry,
		}[r.PathValue("op")]
		if op == nil {
			http.NotFound(w, r)
			return
		}
		if err := op(r.Context(), queue.ID(r.PathValue("id"))); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// wireError is an error as it crosses the socket.
type wireError struct {
	Error  string `json:"error"`
	Field  string `json:"field,omitempty"` // for a refused message
	Reason string `json:"reason,omitempty"`
}

func writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	we := wireError{Error: err.Error()}
	var ime *queue.InvalidMessageError
	switch {
	case errors.Is(err, queue.ErrNotFound):
		status = http.StatusNotFound
	case errors.As(err, &ime):
		status = http.StatusUnprocessableEntity
		we.Field, we.Reason = ime.Field, ime.Reason
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(we)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func parseState(s string) (queue.RecipientState, bool) {
	for st := queue.Queued; st <= queue.Held; st++ {
		if st.String() == s {
			return st, true
		}
	}
	return 0, false
}

// remote is the backend of a running `outbound run`, over its socket.
type remote struct {
	c *http.Client
}

func newRemote(sock string) *remote {
	return &remote{c: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}}
}

// do sends a request to the running queue and decodes a JSON answer into
// out (when not nil), or returns the error it reported.
func (r *remote) do(ctx context.Context, method, path string, hdr http.Header, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://outbound"+path, body)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := r.c.Do(req)
	if err != nil {
		return fmt.Errorf("running queue (outbound run): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var we wireError
		json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&we)
		switch resp.StatusCode {
		case http.StatusNotFound:
			return queue.ErrNotFound
		case http.StatusUnprocessableEntity:
			return &queue.InvalidMessageError{Field: we.Field, Reason: we.Reason}
		}
		return fmt.Errorf("running queue (outbound run): %s", we.Error)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (r *remote) Enqueue(ctx context.Context, env queue.Envelope, body io.Reader) (queue.ID, error) {
	e, err := json.Marshal(env)
	if err != nil {
		return "", err
	}
	var out struct{ ID queue.ID }
	err = r.do(ctx, http.MethodPost, "/v1/messages", http.Header{envelopeHeader: {string(e)}}, body, &out)
	return out.ID, err
}

func (r *remote) List(ctx context.Context, p queue.ListParams) ([]*queue.Message, error) {
	v := url.Values{"after": {string(p.AfterID)}, "limit": {strconv.Itoa(p.Limit)}}
	for _, s := range p.States {
		v.Add("state", s.String())
	}
	var out []*queue.Message
	err := r.do(ctx, http.MethodGet, "/v1/messages?"+v.Encode(), nil, nil, &out)
	return out, err
}

func (r *remote) Get(ctx context.Context, id queue.ID) (*queue.Message, error) {
	var m queue.Message
	if err := r.do(ctx, http.MethodGet, "/v1/messages/"+url.PathEscape(string(id)), nil, nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func (r *remote) OpenBody(ctx context.Context, id queue.ID) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://outbound/v1/messages/"+url.PathEscape(string(id))+"/body", nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, queue.ErrNotFound
		}
		return nil, fmt.Errorf("running queue (outbound run): %s", resp.Status)
	}
	return resp.Body, nil
}

func (r *remote) op(ctx context.Context, id queue.ID, op string) error {
	return r.do(ctx, http.MethodPost, "/v1/messages/"+url.PathEscape(string(id))+"/"+op, nil, nil, nil)
}

func (r *remote) Hold(ctx context.Context, id queue.ID) error    { return r.op(ctx, id, "hold") }
func (r *remote) Release(ctx context.Context, id queue.ID) error { return r.op(ctx, id, "release") }
func (r *remote) Delete(ctx context.Context, id queue.ID) error  { return r.op(ctx, id, "delete") }
func (r *remote) Retry(ctx context.Context, id queue.ID) error   { return r.op(ctx, id, "retry") }
func (r *remote) Close() error {
	r.c.CloseIdleConnections()
	return nil
}

var _ backend = (*remote)(nil)
