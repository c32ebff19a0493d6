"""The network simulator (`telenet simulate`): township HIS endpoints, modalities, readers and clinics driving
a running hub over its real interfaces (HL7/MLLP, DICOM, REST, WebSocket), as a province would."""
