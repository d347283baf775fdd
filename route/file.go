package route

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// File is a source that reads a config file (YAML or JSON) and follows
// its changes. A change is applied once the file has read the same on two
// polls in a row, so a file caught half-written is never applied; write
// the file whole and rename it into place to be safe from slow writers
// too. An invalid or unreadable file is refused: the last good table
// stays, and the rejection is recorded ([File.Status]) and reported to
// [WithOnReject] once per content. File is safe for concurrent use; build
// one with [NewFile] (the zero value is not usable).
type File struct {
	pub    *publisher
	path   string
	format Format

	mu      sync.Mutex // serializes polls; guards below
	applied string     // digest of the content of the current table
	pending string     // digest read at the last poll, not yet applied
	refused string     // digest of the last content refused
	lastErr error      // why it was refused
}

var _ Source = (*File)(nil)

// NewFile reads path and compiles it; it fails when the file cannot be
// read or is invalid, so a program does not start without its routes. The
// format comes from the extension: .json is JSON, .yaml and .yml are
// YAML, anything else is detected from the content. It reads
// [WithPollInterval], [WithOnUpdate], [WithOnReject], [WithOnWarning] and [WithClock]. Call
// [File.Run] to follow changes.
func NewFile(path string, opts ...Option) (*File, error) {
	f := &File{pub: newPublisher("file:"+path, opts), path: path, format: formatOf(path)}
	data, digest, err := f.read()
	if err == nil {
		err = f.apply(data, digest)
	}
	if err != nil {
		return nil, unwrapRejection(err)
	}
	return f, nil
}

func formatOf(path string) Format {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return JSON
	case ".yaml", ".yml":
		return YAML
	}
	return Detect
}

// Table returns the current table: one atomic load.
func (f *File) Table() *Table { return f.pub.Table() }

// Status returns the current table and the rejections so far.
func (f *File) Status() Status { return f.pub.Status() }

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Run polls the file every [WithPollInterval] (default
// [DefaultPollInterval]) until ctx ends, and returns ctx's error.
func (f *File) Run(ctx context.Context) error {
	t := time.NewTicker(f.pub.opts.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			_ = f.Poll() // recorded in Status and reported to WithOnReject
		}
	}
}

// Poll reads the file once. A content that differs from the current
// table's is applied when this poll reads what the previous one read;
// otherwise it is remembered for the next poll. Poll returns the
// rejection of the content it read when that content was refused, now or
// at an earlier poll; nil otherwise.
func (f *File) Poll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, digest, err := f.read()
	if err != nil {
		digest = "error: " + err.Error()
	}
	switch {
	case digest == f.applied:
		f.pending = ""
		return nil
	case digest != f.pending:
		f.pending = digest // changed since the last poll: let it settle
		return nil
	case digest == f.refused:
		return f.lastErr
	}
	if err == nil {
		err = f.apply(data, digest)
	} else {
		err = f.pub.update(nil, "", err)
	}
	if err != nil {
		f.refused, f.lastErr = digest, err
	}
	return err
}

// read reads the file and returns its content and digest.
func (f *File) read() ([]byte, string, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, "", err
	}
	defer fh.Close()
	// One byte over the limit is enough for Parse to refuse the file.
	data, err := io.ReadAll(io.LimitReader(fh, maxConfigBytes+1))
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(data)
	return data, hex.EncodeToString(sum[:8]), nil
}

// apply parses and publishes data; the table's version is its digest.
func (f *File) apply(data []byte, digest string) error {
	cfg, err := Parse(data, f.format)
	if err = f.pub.update(cfg, digest, err); err == nil {
		f.applied = digest
	}
	return err
}
