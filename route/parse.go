package route

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Format is the encoding of a config file.
type Format uint8

const (
	// Detect reads JSON when the input is a JSON object, YAML
	// otherwise.
	Detect Format = iota
	// YAML is YAML 1.2 (go.yaml.in/yaml/v3).
	YAML
	// JSON is JSON (encoding/json).
	JSON
)

// String returns "yaml", "json" or "detect".
func (f Format) String() string {
	switch f {
	case YAML:
		return "yaml"
	case JSON:
		return "json"
	}
	return "detect"
}

// ErrSyntax is wrapped by the errors of [Parse]: the input is not a config
// in the format (bad syntax, an unknown field, a value of the wrong type,
// more than one document).
var ErrSyntax = errors.New("route: config syntax")

// ErrEmpty is returned by [Parse] for an input with nothing but blanks and
// comments: a config with no services is written "services: {}", so that
// a file truncated to nothing is never taken for one.
var ErrEmpty = errors.New("route: empty config")

// maxConfigBytes bounds what Parse reads, so a runaway file cannot
// exhaust memory.
const maxConfigBytes = 8 << 20

// Parse decodes a config in format f. Unknown fields are errors. It does
// not validate the config; [Compile] and [Validate] do. Errors wrap
// [ErrSyntax] or are [ErrEmpty].
func Parse(data []byte, f Format) (*Config, error) {
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than the limit of %d", ErrSyntax, len(data), maxConfigBytes)
	}
	trimmed := bytes.TrimSpace(data)
	if f == Detect {
		f = YAML
		if len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(trimmed) {
			f = JSON // a YAML flow mapping starts with '{' too
		}
	}
	cfg := &Config{}
	var err error
	if f == JSON {
		err = decodeJSON(data, cfg)
	} else {
		err = decodeYAML(data, cfg)
	}
	switch {
	case errors.Is(err, io.EOF):
		return nil, ErrEmpty
	case err != nil:
		return nil, fmt.Errorf("%w (%s): %s", ErrSyntax, f, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return cfg, nil
}

func decodeJSON(data []byte, cfg *Config) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the config object")
	}
	return nil
}

func decodeYAML(data []byte, cfg *Config) (err error) {
	// go.yaml.in/yaml/v3 reports some malformed inputs by panicking; a
	// config file must never take the process down, so they become
	// errors like any other.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed YAML: %v", p)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return err
	}
	var extra yaml.Node
	if dec.Decode(&extra) != io.EOF {
		return errors.New("more than one document")
	}
	return nil
}

// Duration is a time.Duration written as a Go duration string ("1.5s",
// "250ms") in YAML and JSON.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String returns d in time.Duration's format.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string such as \"1.5s\": %s", b)
	}
	return d.parse(s)
}

// MarshalYAML writes d as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a string such as \"1.5s\"", n.Line)
	}
	if err := d.parse(n.Value); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: a duration is a string such as \"1.5s\" or \"250ms\"", s)
	}
	*d = Duration(v)
	return nil
}
