// Package telemetry records what happened to calls through the mesh as
// OpenTelemetry traces and RED metrics (rate, errors, duration), with the
// mesh's own facts (destination service, chosen endpoint, policy, peer
// identity) as attributes. It depends on the OpenTelemetry API only; the
// program chooses the exporters.
package telemetry
