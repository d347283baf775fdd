package breaker

import (
	"context"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// HTTPClassifier classifies the outcome of one HTTP attempt: ctx is the
// caller's context, resp and err what the transport returned. Callers may
// supply their own; [ClassifyHTTP] is the default.
type HTTPClassifier func(ctx context.Context, resp *http.Response, err error) Result

// GRPCClassifier classifies the outcome of one gRPC attempt: ctx is the
// caller's context, err what the call returned. Callers may supply their
// own; [ClassifyGRPC] is the default.
type GRPCClassifier func(ctx context.Context, err error) Result

// ClassifyHTTP is the default [HTTPClassifier]: a transport error or a
// 5xx status other than 501 is a failure, anything else (4xx included) a
// success, and anything that happened after the caller's context ended is
// excluded.
func ClassifyHTTP(ctx context.Context, resp *http.Response, err error) Result {
	switch {
	case err != nil && ctx.Err() != nil:
		return Excluded
	case err != nil:
		return Failure
	case resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented:
		return Failure
	}
	return Success
}

// ClassifyGRPC is the default [GRPCClassifier]: Unavailable,
// ResourceExhausted and Internal are failures; DeadlineExceeded is a
// failure when the caller's own deadline had not passed (a per-try
// timeout, or the server gave up) and excluded otherwise; Canceled is
// excluded; every other code is a success (the server answered).
func ClassifyGRPC(ctx context.Context, err error) Result {
	if err == nil {
		return Success
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.Internal:
		return Failure
	case codes.DeadlineExceeded:
		if ctx.Err() != nil {
			return Excluded
		}
		return Failure
	case codes.Canceled:
		return Excluded
	}
	return Success
}
