"""DICOMweb (PS3.18) on the hub: QIDO-RS, WADO-RS (with rendered frames) and STOW-RS under ``/dicom-web``."""
