package service_test

import (
	"testing"

	"github.com/jetchat/jetchat/delivery"
	"github.com/jetchat/jetchat/svcapi"
)

// TestEnvelopeNamesMatchTheLog: svcapi (what services compile against)
// names the headers and kinds that delivery writes.
func TestEnvelopeNamesMatchTheLog(t *testing.T) {
	for _, c := range [][2]string{
		{svcapi.HdrVersion, delivery.HdrVersion}, {svcapi.HdrKind, delivery.HdrKind},
		{svcapi.HdrFrom, delivery.HdrFrom}, {svcapi.HdrTo, delivery.HdrTo},
		{svcapi.HdrGroup, delivery.HdrGroup}, {svcapi.HdrDevice, delivery.HdrDevice},
		{svcapi.HdrTS, delivery.HdrTS}, {svcapi.HdrID, delivery.HdrID},
		{svcapi.KindMessage, delivery.KindMessage}, {svcapi.KindCopy, delivery.KindCopy},
		{svcapi.KindReceipts, delivery.KindReceipts}, {"1", delivery.RecordVersion},
	} {
		if c[0] != c[1] {
			t.Errorf("svcapi says %q, delivery writes %q", c[0], c[1])
		}
	}
}
