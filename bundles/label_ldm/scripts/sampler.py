LabelSampler = None
write_samples = None
