package dataplane

// Frame is a buffer of a Port: its address in the port's frame memory and
// the length of the data in it.
type Frame struct {
	Addr uint64
	Len  uint32
}

// PortStats are a port's ring health counters.
type PortStats struct {
	RxDropped      uint64 // frames the kernel dropped: RX ring full
	RxInvalid      uint64 // invalid RX descriptors
	TxInvalid      uint64 // invalid TX descriptors
	TxErrors       uint64 // failed TX kicks (link down, driver errors)
	TxRingFull     uint64 // frames not sent: TX ring full or no free TX buffer
	FillRingEmpty  uint64 // times the fill ring had no free slot
	RxFillEmpty    uint64 // kernel: fill ring empty (frames lost)
	FramesInFlight uint64 // TX frames submitted, not yet completed
}

// Port is one RX/TX queue of one interface: an AF_XDP socket or a raw
// socket. A Port is used by one worker only: it is not safe for
// concurrent use. Frames returned by Receive stay owned by the Port until
// they are passed to Recycle; buffers from AllocTx until Transmit.
type Port interface {
	// Name says which interface and queue, e.g. "eth1/q0".
	Name() string
	// Receive fills fs with received frames and returns how many.
	Receive(fs []Frame) int
	// Bytes returns the data of a frame (Len bytes).
	Bytes(f Frame) []byte
	// Recycle gives received frames back for receiving.
	Recycle(fs []Frame)
	// AllocTx returns a free transmit buffer; its Len is the buffer size.
	AllocTx() (Frame, []byte, bool)
	// FreeTx returns an unsent buffer from AllocTx.
	FreeTx(f Frame)
	// Transmit queues frames (from AllocTx, Len set to the data length)
	// and kicks the kernel once. Frames it cannot queue are freed and
	// counted; it returns how many were queued.
	Transmit(fs []Frame) int
	// Reap collects transmit completions, freeing their buffers, and
	// kicks the kernel again if frames are still waiting to be sent. It
	// returns how many frames are still in flight.
	Reap() int
	// FD is a descriptor to poll for received frames.
	FD() int
	// Stats returns ring health counters.
	Stats() PortStats
	// Mode describes the port, e.g. "afxdp copy" or "afpacket".
	Mode() string
	// Close releases the port's resources.
	Close() error
}
