package route

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrUnsupported is wrapped by the [*FieldError]s of a Consul config entry
// field that weft cannot apply as written, such as a redirect to another
// datacenter.
var ErrUnsupported = errors.New("route: not expressible in a weft route table")

// consulFilter translates a Consul subset filter (a go-bexpr expression on
// the instance) into a subset by tags and meta. It understands the forms
// that select by version or tag, joined by "and":
//
//	Service.Meta.<key> == "<value>"
//	"<tag>" in Service.Tags
//	Service.Tags contains "<tag>"
//
// It returns nil for an empty filter (every instance).
func consulFilter(expr string) (*Subset, error) {
	toks, err := bexprTokens(expr)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, nil
	}
	sub := &Subset{}
	for len(toks) > 0 {
		var n int
		switch {
		case len(toks) >= 3 && toks[0].ident && toks[1].op == "==" && toks[2].str:
			key, ok := strings.CutPrefix(toks[0].text, "Service.Meta.")
			if !ok || key == "" {
				return nil, fmt.Errorf("selector %s: only Service.Meta.<key> may be compared with ==", toks[0].text)
			}
			if sub.Meta == nil {
				sub.Meta = map[string]string{}
			}
			if v, dup := sub.Meta[key]; dup && v != toks[2].text {
				return nil, fmt.Errorf("Service.Meta.%s must equal both %q and %q: no instance can", key, v, toks[2].text)
			}
			sub.Meta[key] = toks[2].text
			n = 3
		case len(toks) >= 3 && toks[0].str && toks[1].op == "in" && toks[2].ident && toks[2].text == "Service.Tags":
			sub.Tags = appendTag(sub.Tags, toks[0].text)
			n = 3
		case len(toks) >= 3 && toks[0].ident && toks[0].text == "Service.Tags" && toks[1].op == "contains" && toks[2].str:
			sub.Tags = appendTag(sub.Tags, toks[2].text)
			n = 3
		default:
			return nil, fmt.Errorf("unsupported expression at %q: weft translates Service.Meta.<key> == \"<value>\", \"<tag>\" in Service.Tags and Service.Tags contains \"<tag>\", joined by and", rest(toks))
		}
		toks = toks[n:]
		if len(toks) == 0 {
			break
		}
		if toks[0].op != "and" || len(toks) == 1 {
			return nil, fmt.Errorf("unsupported expression at %q: only and joins terms", rest(toks))
		}
		toks = toks[1:]
	}
	return sub, nil
}

func appendTag(tags []string, t string) []string {
	if slices.Contains(tags, t) {
		return tags
	}
	return append(tags, t)
}

// bexprToken is a token of a filter: a quoted string, a selector
// (Service.Meta.version) or an operator or keyword.
type bexprToken struct {
	text  string
	str   bool   // a quoted string; text is unquoted
	ident bool   // a selector
	op    string // ==, !=, and, or, not, in, contains, (, ), or another word
}

// rest renders tokens back for an error message.
func rest(toks []bexprToken) string {
	parts := make([]string, 0, len(toks))
	for _, t := range toks {
		switch {
		case t.str:
			parts = append(parts, strconv.Quote(t.text))
		default:
			parts = append(parts, t.text)
		}
	}
	return strings.Join(parts, " ")
}

var bexprKeywords = map[string]bool{
	"and": true, "or": true, "not": true, "in": true, "contains": true,
	"matches": true, "is": true, "empty": true,
}

// bexprTokens splits a filter into tokens.
func bexprTokens(s string) ([]bexprToken, error) {
	var toks []bexprToken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c == '"' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at offset %d", i)
			}
			raw := s[i : j+1]
			text := raw[1 : len(raw)-1]
			if c == '"' {
				var err error
				if text, err = strconv.Unquote(raw); err != nil {
					return nil, fmt.Errorf("string at offset %d: %v", i, err)
				}
			}
			toks = append(toks, bexprToken{text: text, str: true})
			i = j + 1
		case c == '=' || c == '!':
			if i+1 < len(s) && s[i+1] == '=' {
				toks = append(toks, bexprToken{text: s[i : i+2], op: s[i : i+2]})
				i += 2
				continue
			}
			return nil, fmt.Errorf("unexpected %q at offset %d", c, i)
		case c == '(' || c == ')':
			toks = append(toks, bexprToken{text: string(c), op: string(c)})
			i++
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\n\r\"`=!()", rune(s[j])) {
				j++
			}
			w := s[i:j]
			if bexprKeywords[strings.ToLower(w)] {
				toks = append(toks, bexprToken{text: w, op: strings.ToLower(w)})
			} else {
				toks = append(toks, bexprToken{text: w, ident: true})
			}
			i = j
		}
	}
	return toks, nil
}
