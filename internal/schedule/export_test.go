package schedule

// SetBeforeMirrorWrite makes st run f in MirrorFile and WithdrawFile
// between their read and their write.
func SetBeforeMirrorWrite(st *Store, f func()) { st.beforeMirrorWrite = f }
