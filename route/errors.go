package route

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every [*ValidationError].
var ErrInvalid = errors.New("route: invalid config")

// FieldError is one problem of a config, at the path of its field, such as
// services.payments.routes[2].match[0].headers["x-canary"].regex.
type FieldError struct {
	// Path locates the field: map keys of services, subsets and external
	// services as .name (or ["name"] when not a plain name), other map
	// keys as ["key"], list elements as [i].
	Path string
	// Message says what is wrong and, where it helps, what would be right.
	Message string
	// Err is the underlying error, such as a *regexp/syntax.Error; nil
	// when there is none.
	Err error
}

// Error returns "path: message".
func (e *FieldError) Error() string { return e.Path + ": " + e.Message }

// Unwrap returns the underlying error, if any.
func (e *FieldError) Unwrap() error { return e.Err }

// ValidationError lists every error of a config that was refused, and the
// warnings found with them. errors.Is(err, [ErrInvalid]) holds, and
// errors.As finds each [*FieldError] and the errors they wrap.
type ValidationError struct {
	// Errors are the problems that made the config invalid, in the order
	// of the config (services by name, then fields in order). Never empty.
	Errors []*FieldError
	// Warnings are problems that would not have refused the config.
	Warnings []*FieldError
}

// Error lists every error, one a line after the first.
func (e *ValidationError) Error() string {
	var b strings.Builder
	n := len(e.Errors)
	if n == 1 {
		fmt.Fprintf(&b, "route: invalid config: %s", e.Errors[0])
		return b.String()
	}
	fmt.Fprintf(&b, "route: invalid config: %d errors:", n)
	for _, fe := range e.Errors {
		b.WriteString("\n\t")
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Is reports whether target is [ErrInvalid].
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns the errors, for errors.As.
func (e *ValidationError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		errs[i] = fe
	}
	return errs
}
