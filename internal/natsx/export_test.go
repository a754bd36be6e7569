package natsx

// ParsePubAckForTest exposes parsePubAck to the external tests.
var ParsePubAckForTest = parsePubAck
