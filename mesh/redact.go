package mesh

import (
	"errors"
	"log"
	"log/slog"
	"strings"

	"github.com/weftmesh/weft/telemetry"
)

// redactText returns s with what may carry a secret replaced, as
// [telemetry.Redact] does for error texts: URL query strings, tokens,
// keys, credentials. Every text weft logs that may hold a URL, a path or
// an error goes through it or through telemetry.Redact.
func redactText(s string) string {
	return telemetry.Redact(errors.New(s))
}

// redactingWriter writes each line it is given — net/http's server error
// log: handshake failures, panics, HTTP/2 protocol errors, which quote
// URLs and errors — to a logger at warning level, redacted.
type redactingWriter struct{ logger *slog.Logger }

func (w redactingWriter) Write(p []byte) (int, error) {
	w.logger.Warn(redactText(strings.TrimSuffix(string(p), "\n")))
	return len(p), nil
}

// serverErrorLog returns the error log of a server's [http.Server]: its
// lines go to logger, redacted.
func serverErrorLog(logger *slog.Logger) *log.Logger {
	return log.New(redactingWriter{logger: logger}, "", 0)
}
