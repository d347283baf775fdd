package calltel

// TraceContextExtract is traceContextExtract, for the external tests.
var TraceContextExtract = traceContextExtract
