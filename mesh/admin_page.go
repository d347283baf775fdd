package mesh

import (
	_ "embed"
	"net/http"
)

// adminPage is the dashboard of [Client.AdminHandler]: one HTML file
// with its styles and script inline, so it needs nothing from outside.
//
//go:embed admin/index.html
var adminPage []byte

func (a *admin) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:")
	_, _ = w.Write(adminPage)
}
