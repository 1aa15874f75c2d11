// Private members are written `_name`; mangling them keeps the bundles small.
export const MANGLE = /^_[a-zA-Z]/;
