package delivery

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The device record keeps its stored form, a JSON object by device id,
// whatever the representation in memory.
func TestDeviceRecordJSON(t *testing.T) {
	t.Parallel()
	stored := `{"v":1,"devices":{"phone":{"floor":5,"seen":7},"web":{"floor":3,"seen":9}}}`
	var rec deviceRecord
	if err := json.Unmarshal([]byte(stored), &rec); err != nil {
		t.Fatal(err)
	}
	if c := rec.Devices.get("web"); c == nil || c.Floor != 3 || c.Seen != 9 {
		t.Fatalf("web = %+v, want floor 3 seen 9", c)
	}
	if rec.Devices.get("tablet") != nil {
		t.Fatal("a device not in the record was found")
	}
	rec.Devices.set("tablet", &deviceCursor{Floor: 1, Seen: 2})
	rec.Devices.set("phone", &deviceCursor{Floor: 6, Seen: 8})
	out, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"devices":{"phone":{"floor":6,"seen":8},"tablet":{"floor":1,"seen":2},"web":{"floor":3,"seen":9}}}`
	if string(out) != want {
		t.Fatalf("stored as %s, want %s", out, want)
	}
	clone := rec.Devices.clone()
	clone.get("web").Floor = 100
	if rec.Devices.get("web").Floor != 3 {
		t.Fatal("a clone shares its cursors")
	}

	for _, bad := range []string{`{"v":1}`, `{"v":1,"devices":null}`} {
		var r deviceRecord
		if err := json.Unmarshal([]byte(bad), &r); err != nil || r.Devices != nil {
			t.Errorf("%s: devices %v, err %v; want none (the record is started afresh)", bad, r.Devices, err)
		}
	}
	var r deviceRecord
	if err := json.Unmarshal([]byte(`{"v":1,"devices":{"phone":null,"web":{"floor":2,"seen":1}}}`), &r); err != nil || len(r.Devices) != 1 || r.Devices.get("web") == nil {
		t.Errorf("a null cursor: devices %v, err %v; want web alone", r.Devices, err)
	}
	if err := json.Unmarshal([]byte(`{"v":1,"devices":[1]}`), &r); err == nil {
		t.Error("devices as an array: no error")
	}
}

// TestReceiptsForgottenAsTheFloorPasses: a device acking in order keeps no
// memory of the receipts its floor has passed, long before its record is
// stored (which prunes the rest), and each message still gets its one
// delivered receipt.
func TestReceiptsForgottenAsTheFloorPasses(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{CursorFlush: time.Hour})
	const n = 50
	d, sink := connectBobWithMessages(t, s, n)
	ids := sink.ids(t, n)
	for i := 0; i < n; i += 10 {
		d.Ack(ids[i : i+10])
		d.user.mu.Lock()
		left := len(d.user.receipted)
		d.user.mu.Unlock()
		if left != 0 {
			t.Fatalf("%d receipts remembered after in-order acks up to %d, want none", left, i+10)
		}
	}
	d.Ack(ids[:10]) // again: no second receipt
	if got := testutil.ToFloat64(s.m.MessagesDelivered); got != n {
		t.Errorf("%v delivered receipts, want %d", got, n)
	}
}
