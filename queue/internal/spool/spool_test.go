package spool

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestReadUpTo(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000) // 10,000 octets
	for _, tc := range []struct {
		name     string
		capacity int
		n        int
		want     int
	}{
		{"exact hint", len(data) + 1, len(data) + 1, len(data)},
		{"no hint", 0, len(data) + 1, len(data)},
		{"small hint", 7, len(data) + 1, len(data)},
		{"limit below the data", 100, 4096, 4096},
		{"empty limit", 0, 0, 0},
	} {
		// One octet per Read: the loop must keep reading, not stop at a short read.
		got, err := ReadUpTo(iotest.OneByteReader(bytes.NewReader(data)), make([]byte, 0, tc.capacity), tc.n)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(got, data[:tc.want]) {
			t.Errorf("%s: read %d octets, want the first %d", tc.name, len(got), tc.want)
		}
	}

	got, err := ReadUpTo(nil, make([]byte, 0, 8), 0)
	if err != nil || len(got) != 0 {
		t.Errorf("nil reader, n 0: %q, %v", got, err)
	}

	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader([]byte("abc")), iotest.ErrReader(boom))
	got, err = ReadUpTo(r, nil, 100)
	if !errors.Is(err, boom) || string(got) != "abc" {
		t.Errorf("failing reader: %q, %v; want \"abc\" and the reader's error", got, err)
	}
}
