// Copyright 2018 The gVisor Authors.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

package p9

// memohfs: AttachAs is Attach claiming uid in Tattach (the upstream
// client always sends NoUID). memohfs's tests use it to show that the
// server takes who a unix peer is from SO_PEERCRED, not from this claim.
func (c *Client) AttachAs(name string, uid UID) (File, error) {
	id, ok := c.fidPool.Get()
	if !ok {
		return nil, ErrOutOfFIDs
	}
	rattach := rattach{}
	if err := c.sendRecv(&tattach{fid: fid(id), Auth: tauth{AttachName: name, Authenticationfid: noFID, UID: uid}}, &rattach); err != nil {
		c.fidPool.Put(id)
		return nil, err
	}
	return c.newFile(fid(id)), nil
}
