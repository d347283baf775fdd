package route

// ConsulFilterForTest exposes the translation of Consul subset filters to
// the package's external tests.
var ConsulFilterForTest = consulFilter
