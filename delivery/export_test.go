package delivery

// NewTestNode is newNode for the package's external tests and benchmarks.
var NewTestNode = newNode
