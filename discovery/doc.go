// Package discovery finds the instances of services.
//
// An [Endpoint] is one instance: an address and the attributes a balancer
// uses to choose between instances. A [Watcher] pushes the full, current set
// of a service's endpoints to its subscribers whenever it changes; it never
// sends diffs, so a subscriber can rebuild its state from each [Update] alone.
//
// [Static] is a Watcher whose sets are given by the program and can be
// changed at run time; it needs no outside service.
package discovery
