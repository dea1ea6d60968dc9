"""Plumbing that no lesson teaches: a download never used half-done and a zip unpacked without escaping its
folder (:mod:`.download`), files written so that nothing is half-written, under a lock (:mod:`.files`), one
image file read with the data set's rules (:mod:`.images`), names printed safely (:mod:`.text`)."""
