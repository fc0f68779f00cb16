package embedded_test

import (
	"errors"
	"testing"

	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
	"github.com/outboundmail/outbound/queue/queuetest"
)

func open(t *testing.T, dir string, opts *embedded.Options) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, queue.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queue.Store { return open(t, t.TempDir(), nil) })
}

// TestConformanceFilesOnly runs the suite with every body in a file.
func TestConformanceFilesOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the default configuration is covered by TestConformance")
	}
	queuetest.Run(t, func(t *testing.T) queue.Store {
		return open(t, t.TempDir(), &embedded.Options{InlineBodyLimit: -1})
	})
}

func TestConformanceReopen(t *testing.T) {
	queuetest.RunReopen(t, func(t *testing.T) queuetest.Opener {
		dir := t.TempDir()
		return func() (queue.Store, error) { return embedded.Open(dir, nil) }
	})
}
